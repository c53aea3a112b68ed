using MmuSpec.Harness.Concurrency;
using Xunit;
using Xunit.Sdk;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// <see cref="CoyoteExploration"/> on the toys: a failing exploration fails the test with its saved schedule replayed to
/// the same history, a passing one returns its result and saves nothing, and an observed subject sees every op run.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public sealed class CoyoteExplorationTests
{
    const uint Seed = 20261204;

    static string TraceFile(string label, ScheduleStrategy strategy) =>
        Path.Combine(Path.GetTempPath(), $"mmuspec-{label}-{strategy}-{Environment.ProcessId}.json");

    [Fact]
    public void A_failing_exploration_fails_the_test_with_its_schedule_saved_and_replayed_to_the_same_history()
    {
        var program = Toys.Program(Toys.Repeat(ToyOp.Inc, 3), Toys.Repeat(ToyOp.Inc, 3), [ToyOp.Inc, ToyOp.Get, ToyOp.Inc]);
        string trace = TraceFile("toy-racy", ScheduleStrategy.Prioritization);
        var e = Assert.ThrowsAny<XunitException>(() =>
            CoyoteExploration.ExploreOrFail(Toys.Racy<CoyoteSchedulePoint>(), program, "toy-racy", ScheduleStrategy.Prioritization, 200, Seed));
        Assert.Contains("toy-racy Prioritization: failed in iteration", e.Message);
        Assert.Contains($"schedule saved to {trace}", e.Message);
        Assert.Contains("replayed: the same history fails again", e.Message);
        Assert.True(File.Exists(trace));
        File.Delete(trace);
    }

    [Fact]
    public void A_passing_exploration_returns_its_result_saves_nothing_and_an_observed_subject_sees_every_op()
    {
        var program = Toys.Program(Toys.Repeat(ToyOp.Inc, 2), [ToyOp.Inc, ToyOp.Get]);
        int seen = 0, gets = 0;
        var subject = Toys.Counter().Observing((op, _) =>
        {
            seen++;
            if (op == ToyOp.Get) gets++;
        });
        foreach (var strategy in CoyoteExploration.Strategies)
        {
            var result = CoyoteExploration.ExploreOrFail(subject, program, "toy-counter", strategy, 50, Seed);
            Assert.False(result.Failed);
            Assert.Equal(50, result.Iterations);
            Assert.False(File.Exists(TraceFile("toy-counter", strategy)));
        }
        Assert.Equal(2 * 50 * program.OpCount, seen);
        Assert.Equal(2 * 50, gets);
    }
}
