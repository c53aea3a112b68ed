using System.Collections.Immutable;
using System.Text.Json;
using MmuSpec.Harness.Running;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// The concurrent TDP MMU as a family (`tdp-concurrent`): a case is a program of vCPU threads explored under
/// Coyote (<see cref="ConcurrentTdpCheck"/>), not a sequence run in lockstep. Its report has no step: the
/// divergence is "when its schedules were explored", the spec's side a linearizable history, the impl's the
/// schedule that was not, and the lines under it the checker's explanation (timeline, longest explained
/// prefix, what the spec answers instead). A counterexample keeps the failing schedule
/// (<see cref="Recorded"/>), so `replay FILE` reruns exactly it.
/// </summary>
public sealed class ConcurrentTdpFamily : DiffFamily<ConcurrentTdpCase>
{
    public override string Name => DiffProperties.ConcurrentTdpFamily;
    public override string WhenNoStep => "when its schedules were explored";
    public override IReadOnlyList<string> Situations => ConcurrentCoverage.Names;

    public override int StepCount(ConcurrentTdpCase c) => c.OpCount;

    public override LockstepReport Run(ConcurrentTdpCase c, int maxStateRows = 0) => Report(c, ConcurrentTdpCheck.Run(c));

    /// <summary>The verdict as the harness's report: one record, diverging when a schedule was not linearizable.</summary>
    public LockstepReport Report(ConcurrentTdpCase c, ConcurrentTdpVerdict v)
    {
        const string Spec = "every history linearizable, the final state that order's";
        var lines = v.Failure is { } f ? f.TrimEnd().Split('\n').Select(l => l.TrimEnd('\r')).ToImmutableArray() : [];
        var record = new StepRecord(StepKind.End, -1, WhenNoStep, Spec, v.Failed ? v.ToString() : Spec, v.Failed, lines);
        return new LockstepReport(this, c, [record], v.Failed ? Lockstep.ToDivergence(record) : null, [], 0, null);
    }

    /// <summary>The case with its failing schedule pinned (what a counterexample file keeps); the case itself when it passes.</summary>
    public override object Recorded(ConcurrentTdpCase c)
    {
        if (c.Schedule is not null) return c;
        var v = ConcurrentTdpCheck.Run(c);
        return v.Failed && v.Trace is { } trace ? c with { Schedule = trace } : c;
    }

    public override void Classify(ConcurrentTdpCase c, Action<string> hit) => ConcurrentTdpCheck.Run(c, hit);

    public override string Summary(ConcurrentTdpCase c) =>
        $"{CaseRuns.Count(c.Program.Threads.Count, "thread")}, {CaseRuns.Count(c.OpCount, "op")}, " +
        (c.Schedule is null ? $"{c.Iterations} PCT + {c.Iterations} random schedules" : "one recorded schedule") + $", VM {c.Config}";

    public override string Render(ConcurrentTdpCase c, int? highlightStep) => c.Render(highlightStep);
    public override void WriteJson(Utf8JsonWriter w, ConcurrentTdpCase c) => ConcurrentTdpCase.WriteJson(w, c);
    public override ConcurrentTdpCase ReadJson(JsonElement e, string path) => ConcurrentTdpCase.ReadJson(e, path);
    public override void CheckRules(ConcurrentTdpCase c, string path) => ConcurrentTdpCase.CheckRules(c, path);

    public override IReadOnlyList<OpList<ConcurrentTdpCase>> OpLists { get; } =
    [
        new("ops", c => c.OpCount, (c, i) => c.RemoveOp(i)),
    ];
}
