using MmuSpec.Harness.Concurrency;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using static MmuSpec.Tests.TdpSteps;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// The linearizability checker with ops made of steps (Linearizability.Steps.cs): written histories of range
/// operations racing faults that no atomic range op explains and a run of per-entry steps does, and ones no
/// run of steps explains either (a walk that skipped a leaf, a step outside the op's interval).
/// </summary>
public sealed class RangeStepLinearizabilityTests
{
    static readonly TdpOp Slot = new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1000, PageSize.Size4K, ReadOnly: false);

    static TdpState Vm(AccessedDirty ad, params TdpOp[] ops)
    {
        var s = TdpState.Create(new VmConfig(TdpFormat.Ept, accessedDirty: ad));
        foreach (var op in ops.Prepend(Slot)) s = s.Step(op).State;
        return s;
    }

    static TdpLinResult Faulted(ulong gfn, bool faulted = true) => new(new TdpResult.Mapped((gfn - 0x200 + 0x1000) << 12, PageSize.Size4K, faulted));
    static readonly TdpLinResult Ok = new(VmResult.Ok.Instance);

    static HistoryEvent<TdpOp, TdpLinResult> Invoke(int t, TdpOp op) => HistoryEvent<TdpOp, TdpLinResult>.Invoke(t, op);
    static HistoryEvent<TdpOp, TdpLinResult> Respond(int t, TdpLinResult r) => HistoryEvent<TdpOp, TdpLinResult>.Respond(t, r);

    /// <summary>The final state the spec reaches from <paramref name="s"/> by <paramref name="ops"/>, as the checker compares it.</summary>
    static TdpLinState Final(TdpState s, params TdpOp[] ops)
    {
        foreach (var op in ops) s = s.Step(op).State;
        return new TdpLinState(s);
    }

    [Fact]
    public void A_fault_behind_a_zaps_cursor_and_one_ahead_of_it_is_explained_only_in_steps()
    {
        var start = Vm(AccessedDirty.Untracked);
        var history = History<TdpOp, TdpLinResult>.FromEvents(
        [
            Invoke(0, new TdpOp.ZapRange(0x200, 0x208)),
            Invoke(1, Read(0x201)), Respond(1, Faulted(0x201)),
            Invoke(1, Read(0x205)), Respond(1, Faulted(0x205)),
            Respond(0, Ok),
        ]);
        // 0x201 stays mapped, 0x205 is gone: the zap passed 0x201 before the fault and reached 0x205 after.
        var observed = Final(start, Read(0x201));
        var inSteps = Linearizability.Check(history, new TdpLinSpec(start), observed);
        Assert.True(inSteps.IsLinearizable, inSteps.Explanation);
        Assert.Contains(inSteps.Order, o => o.Step is not null);
        var atomic = Linearizability.Check(history, new TdpLinSpec(start) { RangeOpsInSteps = false }, observed);
        Assert.False(atomic.IsLinearizable);
    }

    [Fact]
    public void A_zap_that_skipped_a_leaf_is_not_explained_by_any_run_of_steps()
    {
        var start = Vm(AccessedDirty.Untracked, Read(0x203), Read(0x204));
        var history = History<TdpOp, TdpLinResult>.FromEvents(
        [
            Invoke(0, new TdpOp.ZapRange(0x200, 0x208)),
            Invoke(1, Read(0x206)), Respond(1, Faulted(0x206)),
            Respond(0, Ok),
        ]);
        // 0x204 was there before the zap began and nothing else touched it: a walk never passes it.
        var observed = Final(start, new TdpOp.ZapRange(0x200, 0x204), Read(0x206), new TdpOp.ZapRange(0x206, 0x207));
        Assert.Contains("0x204", observed.Mapping);
        var verdict = Linearizability.Check(history, new TdpLinSpec(start), observed);
        Assert.False(verdict.IsLinearizable);
        Assert.Contains("no order of steps", verdict.Explanation);
    }

    [Fact]
    public void An_age_that_saw_an_early_leaf_old_and_a_later_one_young_is_explained_in_steps()
    {
        // The history ConcurrentTdpAgingTests found with aging under the read side: the host's age answers old
        // for the first leaf and young for the second, which the vCPU touched in the other order.
        var start = Vm(AccessedDirty.Enabled, Read(0x201), Read(0x205), new TdpOp.Age(0x200, 0x600));
        var history = History<TdpOp, TdpLinResult>.FromEvents(
        [
            Invoke(0, new TdpOp.Age(0x200, 0x208)),
            Invoke(1, Read(0x201)), Respond(1, Faulted(0x201, faulted: false)),
            Invoke(1, Read(0x205)), Respond(1, Faulted(0x205, faulted: false)),
            Respond(0, new TdpLinResult(new TdpResult.Young(true))),
        ]);
        var observed = Final(start, Read(0x201), Read(0x205), new TdpOp.Age(0x205, 0x206));
        Assert.True(Linearizability.Check(history, new TdpLinSpec(start), observed).IsLinearizable);
        Assert.False(Linearizability.Check(history, new TdpLinSpec(start) { RangeOpsInSteps = false }, observed).IsLinearizable);
    }

    [Fact]
    public void No_step_runs_outside_the_ops_interval()
    {
        // The fault responded before the zap was invoked, so the zap's steps all come after it: 0x201 must go.
        var start = Vm(AccessedDirty.Untracked);
        var history = History<TdpOp, TdpLinResult>.FromEvents(
        [
            Invoke(1, Read(0x201)), Respond(1, Faulted(0x201)),
            Invoke(0, new TdpOp.ZapRange(0x200, 0x208)), Respond(0, Ok),
        ]);
        Assert.False(Linearizability.Check(history, new TdpLinSpec(start), Final(start, Read(0x201))).IsLinearizable);
        Assert.True(Linearizability.Check(history, new TdpLinSpec(start), Final(start)).IsLinearizable);
    }

    [Fact]
    public void A_pending_walk_may_have_taken_some_of_its_steps()
    {
        var start = Vm(AccessedDirty.Untracked, Read(0x201), Read(0x205));
        var history = History<TdpOp, TdpLinResult>.FromEvents([Invoke(0, new TdpOp.ZapRange(0x200, 0x208))]);
        var verdict = Linearizability.Check(history, new TdpLinSpec(start), Final(start, new TdpOp.ZapRange(0x200, 0x202)));
        Assert.True(verdict.IsLinearizable, verdict.Explanation);
        Assert.Contains("stopped part way", verdict.Explanation);
    }
}
