using MmuSpec.Harness.Concurrency;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// What the Coyote exploration tests share (import with <c>using static</c>, beside <see cref="TdpSteps"/>): the slot
/// their setups start from, both strategies, and an exploration whose failure is replayed from its saved schedule and
/// reported. Each test keeps its own program, setup, iteration count, seed and checks of what was reached.
/// </summary>
public static class CoyoteExploration
{
    /// <summary>PCT switches threads at only a few points per schedule; the uniform strategy interleaves inside every op.</summary>
    public static IReadOnlyList<ScheduleStrategy> Strategies { get; } = [ScheduleStrategy.Prioritization, ScheduleStrategy.Random];

    /// <summary>Slot 0: gfns [0, 0x400) on host frames from 0x100000, backed by host pages of <paramref name="hostPages"/>.</summary>
    public static TdpOp Slot(PageSize hostPages) =>
        new TdpOp.CreateSlot(0, BaseGfn: 0, Pages: 0x400, HostPfnBase: 0x100000, hostPages, ReadOnly: false);

    /// <summary>The subject with <paramref name="seen"/> called on every op and its result (counts of what the schedules reached).</summary>
    public static ConcurrentSubject<TObject, TState, TOp, TResult> Observing<TObject, TState, TOp, TResult>(
        this ConcurrentSubject<TObject, TState, TOp, TResult> subject, Action<TOp, TResult> seen)
        where TState : notnull
    {
        var apply = subject.Apply;
        return subject with
        {
            Apply = (vm, thread, op) =>
            {
                var result = apply(vm, thread, op);
                seen(op, result);
                return result;
            },
        };
    }

    /// <summary>
    /// Explores <paramref name="iterations"/> schedules of <paramref name="program"/> from <paramref name="seed"/>. A failing
    /// schedule's Coyote trace is saved as $TMPDIR/mmuspec-<paramref name="label"/>-strategy-pid.json and replayed (the
    /// counterexample must be reproducible); the test then fails with the history, the file and whether the replay
    /// failed with the same history.
    /// </summary>
    public static ExplorationResult<TOp, TResult> ExploreOrFail<TObject, TState, TOp, TResult>(
        ConcurrentSubject<TObject, TState, TOp, TResult> subject, ConcurrentProgram<TOp> program,
        string label, ScheduleStrategy strategy, uint iterations, uint seed)
        where TState : notnull
    {
        string trace = Path.Combine(Path.GetTempPath(), $"mmuspec-{label}-{strategy}-{Environment.ProcessId}.json");
        var result = ScheduleExploration.Explore(subject, program, new ExplorationSettings(iterations, seed, strategy, TraceFile: trace));
        if (result.Failed)
        {
            var replay = ScheduleExploration.Replay(subject, program, File.ReadAllText(trace));
            bool same = replay.Failed && replay.FailingHistory?.RenderTimeline() == result.FailingHistory?.RenderTimeline();
            Assert.Fail($"{label} {strategy}: {result}\nschedule saved to {trace}; replayed: " +
                (same ? "the same history fails again" : $"NOT the same failure:\n{replay}"));
        }
        return result;
    }
}
