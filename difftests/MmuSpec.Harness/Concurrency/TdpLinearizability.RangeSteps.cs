using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// Range operations in steps (docs/tdp-concurrency.md, "Range operations"): a zap, dirty logging's
/// write-protection and aging walk their range entry by entry, under the read side or dropping the write side
/// to yield, so other ops run between their entries. Each is checked as the spec's run of per-entry steps
/// (<see cref="TdpState.BeginWalk"/>, <see cref="TdpState.StepWalk"/>), each step linearized at its own point.
/// </summary>
public sealed partial class TdpLinSpec : ISteppedSpec<TdpLinState, TdpOp, TdpLinResult>
{
    /// <summary>Off: every op is one atomic step (what the checker knew before the impl walked ranges in steps).</summary>
    public bool RangeOpsInSteps { get; init; } = true;

    /// <summary>
    /// Where a walk's hole steps stop (<see cref="TdpState.StepWalk(RangeWalk, IReadOnlySet{ulong})"/>): the leaf
    /// boundaries around every gfn the history's accesses touch; null, one entry at a time.
    /// </summary>
    public IReadOnlySet<ulong>? HoleStops { get; init; }

    public ISteppedSpec<TdpLinState, TdpOp, TdpLinResult> For(History<TdpOp, TdpLinResult> history)
    {
        var config = Initial.Spec!.Config;
        var stops = history.Ops.Select(o => o.Op).OfType<TdpOp.AccessGpa>()
            .SelectMany(a => TdpState.LeafBoundaries((a.Gpa >> 12) & ~config.DirectBits)).ToHashSet();
        return new TdpLinSpec(Initial.Spec) { RangeOpsInSteps = RangeOpsInSteps, HoleStops = stops };
    }

    public bool MayRunInSteps(TdpOp op) =>
        RangeOpsInSteps && op is TdpOp.ZapRange or TdpOp.Age or TdpOp.TestAge or TdpOp.SetDirtyLogging
            or TdpOp.AccessGpa { Type: AccessType.Write };

    /// <summary>
    /// The progress of a write fault between its two changes (<see cref="TdpState.WriteFaultZapsHugeLeaf"/>): the
    /// read-only huge leaf is gone and nothing is mapped below it yet. Other vCPUs' ops see that hole (a test_age
    /// finds no young leaf there; a read faults a small leaf into it); the fault then maps below, or answers Retry.
    /// </summary>
    sealed record HugeLeafDropped(ulong Gpa)
    {
        public override string ToString() => $"write fault at gpa {Bits.Hex(Gpa)} dropped the huge leaf, maps below next";
    }

    public IEnumerable<OpStep<TdpLinState, TdpLinResult>> NextStep(TdpLinState state, HistoryOp<TdpOp, TdpLinResult> op, object? progress)
    {
        var spec = state.Spec ?? throw new ArgumentException("a state read back from the impl cannot be stepped", nameof(state));
        // What a step takes away stays usable by other vCPUs' TLBs until the whole op returns (VcpuTlbs).
        long returnedAt = op.RespondedAt ?? VcpuTlbs.Pending;
        if (op.Op is TdpOp.AccessGpa access)
        {
            // A write fault: one atomic step (every outcome an access may have), or the drop of the huge leaf first.
            if (progress is HugeLeafDropped)
            {
                var (result, next) = Step(state, access, returnedAt);
                return [new(next, null, result), new(state, null, TdpLinResult.Retry)];
            }
            var whole = Outcomes(state, op).Select(o => new OpStep<TdpLinState, TdpLinResult>(o.Next, null, o.Result));
            return spec.WriteFaultZapsHugeLeaf(access.Gpa) is { } dropped
                ? whole.Append(new(Same(state, dropped, returnedAt), new HugeLeafDropped(access.Gpa), null))
                : whole;
        }
        if (progress is null)
        {
            // Rejected, or a range that changes nothing by rule: one atomic step, as before.
            if (spec.BeginWalk(op.Op) is not var (begun, first))
                return Outcomes(state, op).Select(o => new OpStep<TdpLinState, TdpLinResult>(o.Next, null, o.Result));
            return [new(Same(state, begun, returnedAt), first, null)];
        }
        var walk = (RangeWalk)progress;
        return (HoleStops is null ? spec.StepWalk(walk) : spec.StepWalk(walk, HoleStops)).Select(s => s.Walk.IsDone
            ? new OpStep<TdpLinState, TdpLinResult>(Unmapped(Same(state, s.State, returnedAt), op.Op, returnedAt), null, new TdpLinResult(TdpDiff.Comparable(TdpState.WalkResult(s.Walk))))
            : new OpStep<TdpLinState, TdpLinResult>(Same(state, s.State, returnedAt), s.Walk, null));
    }

    /// <summary>A step that changed nothing keeps the state object (no second rendering of the mapping).</summary>
    static TdpLinState Same(TdpLinState state, TdpState next, long returnedAt) =>
        ReferenceEquals(state.Spec, next) ? state : new TdpLinState(next, state.Tlbs.Step(state.Spec!, next, returnedAt));
}
