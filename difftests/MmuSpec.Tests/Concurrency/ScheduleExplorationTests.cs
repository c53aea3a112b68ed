using MmuSpec.Harness.Concurrency;
using MmuSpec.Impl.Concurrency;
using Xunit;
using Xunit.Abstractions;
using static MmuSpec.Tests.Concurrency.Toys;

namespace MmuSpec.Tests.Concurrency;

// Coyote's runtime is process-wide: one exploration at a time, never beside another test class's.
[CollectionDefinition(nameof(CoyoteCollection), DisableParallelization = true)]
public sealed class CoyoteCollection;

/// <summary>
/// The Coyote runner on the toys: correct objects are linearizable in every explored schedule, the racy
/// counter is caught, explained, replayed from its saved trace and shrunk. Iteration counts are stated
/// per test: 10 to 200 schedules per exploration.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class ScheduleExplorationTests(ITestOutputHelper output)
{
    static readonly ConcurrentProgram<ToyOp> RacyProgram = Program(Repeat(ToyOp.Inc, 3), Repeat(ToyOp.Inc, 3), [ToyOp.Inc, ToyOp.Get, ToyOp.Inc]);

    [Fact]
    public void A_compare_and_exchange_register_is_linearizable_in_every_explored_schedule()
    {
        var program = Program(
            [new ToyOp.Cas(0, 1), ToyOp.Get, new ToyOp.Cas(1, 2), new ToyOp.Write(5), ToyOp.Get],
            [new ToyOp.Cas(0, 3), new ToyOp.Cas(3, 4), ToyOp.Get, new ToyOp.Cas(5, 6), ToyOp.Get],
            [ToyOp.Get, new ToyOp.Write(1), new ToyOp.Cas(1, 7), ToyOp.Get, new ToyOp.Cas(2, 0)]);
        var result = ScheduleExploration.Explore(Register(), program, new ExplorationSettings(Iterations: 200, Seed: 20261204));
        Assert.False(result.Failed, result.ToString());
        Assert.Equal(200, result.Iterations);
    }

    [Fact]
    public void A_compare_and_exchange_counter_is_linearizable_in_every_explored_schedule()
    {
        var program = Program(Repeat(ToyOp.Inc, 4), [ToyOp.Inc, ToyOp.Get, ToyOp.Inc, ToyOp.Inc], [ToyOp.Get, ToyOp.Inc, ToyOp.Inc, ToyOp.Get]);
        foreach (var strategy in new[] { ScheduleStrategy.Prioritization, ScheduleStrategy.Random })
        {
            var result = ScheduleExploration.Explore(Counter(), program, new ExplorationSettings(200, 20261204, strategy));
            Assert.False(result.Failed, result.ToString());
            Assert.Equal(200, result.Iterations);
        }
    }

    [Fact]
    public void The_racy_counter_is_caught_within_twenty_schedules_and_explained()
    {
        var result = ScheduleExploration.Explore(Racy<CoyoteSchedulePoint>(), RacyProgram, new ExplorationSettings(200, 20261204));
        Assert.True(result.Failed);
        output.WriteLine($"caught in schedule {result.Iterations} of 200:\n{result.Failure}");
        Assert.InRange(result.Iterations, 1, 20);
        Assert.NotNull(result.FailingHistory);
        Assert.False(Linearizability.Check(result.FailingHistory, Toys.Spec).IsLinearizable);
        Assert.Contains("not linearizable", result.Failure);
        Assert.Contains("longest explained prefix", result.Failure);
        Assert.Contains("but the spec answers", result.Failure);
        Assert.NotNull(result.ReproducibleTrace);
    }

    [Fact]
    public void The_same_seed_explores_the_same_schedules()
    {
        var a = ScheduleExploration.Explore(Racy<CoyoteSchedulePoint>(), RacyProgram, new ExplorationSettings(200, 7, ScheduleStrategy.Random));
        var b = ScheduleExploration.Explore(Racy<CoyoteSchedulePoint>(), RacyProgram, new ExplorationSettings(200, 7, ScheduleStrategy.Random));
        Assert.True(a.Failed);
        Assert.Equal(a.Iterations, b.Iterations);
        Assert.Equal(a.Failure, b.Failure);
        Assert.Equal(a.ReproducibleTrace, b.ReproducibleTrace);
    }

    [Fact]
    public void A_saved_schedule_replays_to_the_same_failure()
    {
        string file = Path.Combine(Path.GetTempPath(), $"mmuspec-schedule-{Guid.NewGuid():N}.json");
        try
        {
            var found = ScheduleExploration.Explore(Racy<CoyoteSchedulePoint>(), RacyProgram, new ExplorationSettings(200, 20261204, TraceFile: file));
            Assert.True(found.Failed);
            Assert.Equal(found.ReproducibleTrace, File.ReadAllText(file));
            var replayed = ScheduleExploration.Replay(Racy<CoyoteSchedulePoint>(), RacyProgram, File.ReadAllText(file));
            Assert.True(replayed.Failed);
            Assert.Equal(1, replayed.Iterations);
            Assert.Equal(found.Failure, replayed.Failure);
            Assert.Equal(found.FailingHistory!.Ops, replayed.FailingHistory!.Ops);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Only_schedule_points_are_controlled_so_without_them_the_race_is_never_seen()
    {
        // The same racy code with the production seam: each op runs to its end once its thread is
        // scheduled, so every explored schedule is a sequential one and the race cannot show.
        var result = ScheduleExploration.Explore(Racy<NoSchedulePoints>(), RacyProgram, new ExplorationSettings(100, 20261204));
        Assert.False(result.Failed, result.ToString());
        Assert.Equal(100, result.Iterations);
    }

    [Fact]
    public void A_passing_exploration_writes_no_trace()
    {
        string file = Path.Combine(Path.GetTempPath(), $"mmuspec-schedule-{Guid.NewGuid():N}.json");
        var result = ScheduleExploration.Explore(Counter(), Program([ToyOp.Inc], [ToyOp.Inc]), new ExplorationSettings(20, 1, TraceFile: file));
        Assert.False(result.Failed, result.ToString());
        Assert.False(File.Exists(file));
    }

    [Fact]
    public void A_thread_blocked_in_a_dotnet_lock_is_reported_as_a_potential_deadlock_not_hung()
    {
        // T0 yields while it holds the lock; when T1 is scheduled it blocks in Monitor.Enter, outside any
        // schedule point, so no controlled thread can run: Coyote reports it after the deadlock timeout.
        var subject = new ConcurrentSubject<MonitorCounter<CoyoteSchedulePoint>, ToyState, ToyOp, int>(() => new(), (c, _, op) => c.Apply(op), Toys.Spec);
        var result = ScheduleExploration.Explore(subject, Program(Repeat(ToyOp.Inc, 2), Repeat(ToyOp.Inc, 2)),
            new ExplorationSettings(50, 20261204, ScheduleStrategy.Random, DeadlockTimeoutMs: 500));
        Assert.True(result.Failed);
        Assert.Contains("deadlock", result.Failure, StringComparison.OrdinalIgnoreCase);
        // The history is that schedule's, as far as it got: both threads' first increments were invoked, one never responded.
        var history = result.FailingHistory!;
        Assert.Contains(history.Ops, o => o.IsPending);
        Assert.Equal(2, history.Ops.Select(o => o.Thread).Distinct().Count());
    }

    [Fact]
    public void An_op_that_throws_fails_the_schedule_and_names_its_thread()
    {
        var subject = new ConcurrentSubject<CasCounter<CoyoteSchedulePoint>, ToyState, ToyOp, int>(
            () => new(), (c, _, op) => c.Apply(op), Toys.Spec);
        var result = ScheduleExploration.Explore(subject, Program([ToyOp.Inc], [new ToyOp.Write(1)]), new ExplorationSettings(10, 1));
        Assert.True(result.Failed);
        Assert.Equal(1, result.Iterations);
        Assert.Contains("thread 1 threw System.ArgumentException: a counter has no write(1)", result.Failure);
    }

    [Fact]
    public void A_failing_program_shrinks_to_two_threads_of_one_increment()
    {
        var settings = new ExplorationSettings(100, 20261204);
        int explorations = 0;
        var shrunk = ProgramShrinker.Shrink(RacyProgram, p =>
        {
            explorations++;
            return ScheduleExploration.Explore(Racy<CoyoteSchedulePoint>(), p, settings).Failed;
        });
        Assert.Equal(2, shrunk.Threads.Count);
        Assert.All(shrunk.Threads, t => Assert.Equal([ToyOp.Inc], t));
        Assert.InRange(explorations, 1, 40);
    }
}

/// <summary>The shrinker alone, on a predicate that needs two threads that each increment.</summary>
public class ProgramShrinkerTests
{
    static bool NeedsTwoIncrementingThreads(ConcurrentProgram<ToyOp> p) => p.Threads.Count(t => t.Contains(ToyOp.Inc)) >= 2;

    [Fact]
    public void Removes_every_thread_and_op_the_failure_does_not_need()
    {
        var program = Program(
            [ToyOp.Get, ToyOp.Get, ToyOp.Inc],
            [new ToyOp.Write(1), ToyOp.Get],
            [ToyOp.Inc, ToyOp.Inc, ToyOp.Get],
            [ToyOp.Inc]);
        var shrunk = ProgramShrinker.Shrink(program, NeedsTwoIncrementingThreads);
        Assert.Equal(2, shrunk.Threads.Count);
        Assert.All(shrunk.Threads, t => Assert.Equal([ToyOp.Inc], t));
    }

    [Fact]
    public void A_program_with_nothing_to_remove_is_kept()
    {
        var program = Program([ToyOp.Inc], [ToyOp.Inc]);
        var shrunk = ProgramShrinker.Shrink(program, NeedsTwoIncrementingThreads);
        Assert.Equal(program.ToString(), shrunk.ToString());
    }
}
