using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// Retries that leave something behind. A write fault on a read-only huge leaf that must not simply be made
/// writable (its slot logs dirty pages, or it covers a write-tracked gfn) first zaps that leaf
/// (tdp_mmu_zap_spte_atomic) and then maps a smaller one below it (kvm_tdp_mmu_map); when linking the new table
/// loses its exchange to another vCPU the fault answers Retry (RET_PF_RETRY) with the huge leaf already gone. The
/// zap alone changes no answer the guest gets (the next access faults the page back in), so the spec allows it: the
/// access answers Retry with exactly that leaf removed, wherever its own step would have removed it.
/// </summary>
public static class TdpLinRetries
{
    public static IEnumerable<(TdpLinResult Result, TdpLinState Next)> AfterHugeLeafZap(TdpLinState state, TdpOp.AccessGpa access)
    {
        if (access.Type != AccessType.Write || state.Spec is not { } spec) yield break;
        ulong gfn = (access.Gpa >> 12) & ~spec.Config.DirectBits;
        bool mirror = spec.Config.SharedBit is not null && ((access.Gpa >> 12) & spec.Config.DirectBits) == 0;
        var huge = spec.Leaves().Where(l => l.Page.Role.Mirror == mirror && l.Leaf.Level > 1 && !l.Leaf.Writable && l.Leaf.Overlaps(gfn, gfn + 1)).ToList();
        if (huge.Count != 1) yield break;
        var leaf = huge[0].Leaf;
        // Only where the spec's own step drops the leaf (and maps below it): a fault that retries first leaves it.
        if (spec.Step(access).State.Leaves().Any(l => l.Page == huge[0].Page && l.Leaf.Gfn == leaf.Gfn && l.Leaf.Level == leaf.Level)) yield break;
        var zapped = spec.ZapLeaves(leaf.Gfn, leaf.Gfn + leaf.Frames);
        // ZapLeaves covers both roots; the other root's leaves over the range must stay as they are.
        if (zapped.Leaves().Count() != spec.Leaves().Count() - 1) yield break;
        yield return (TdpLinResult.Retry, new TdpLinState(zapped));
    }
}
