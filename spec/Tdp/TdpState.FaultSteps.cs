using MmuSpec.Spec.Memory;

namespace MmuSpec.Spec.Tdp;

public sealed partial record TdpState
{
    /// <summary>
    /// Step 5 of <see cref="Translate"/>: a write to a read-only leaf makes it writable in place, unless it is a
    /// huge leaf of a logging slot (the bitmap is per 4 KiB page) or covers a write-tracked gfn; then the fault
    /// drops the leaf and maps smaller below it.
    /// </summary>
    bool WriteFaultDropsLeaf(HostMemslot slot, Spte.Leaf leaf) =>
        (leaf.Level > 1 && slot.DirtyLogging) || TracksWithin(leaf.Gfn, leaf.Level);

    /// <summary>
    /// Step 5's drop (<see cref="WriteFaultDropsLeaf"/>) as the first of two changes: under mmu_lock held for read
    /// KVM removes the leaf (tdp_mmu_zap_spte_atomic) and then maps below it; a fault that loses its race after
    /// the first answers Retry with the leaf already gone (RET_PF_RETRY; the next fault maps below). The state
    /// after the first change, or null when a write to <paramref name="gpa"/> does not take that path now.
    /// </summary>
    public TdpState? WriteFaultZapsHugeLeaf(ulong gpa)
    {
        if (gpa >> Config.GpaBits != 0) return null;
        ulong gfn = Gfn(gpa);
        var slot = Slots.Values.FirstOrDefault(s => s.Contains(gfn));
        if (slot is null || slot.ReadOnly || WriteTracked.Contains(gfn) || MustRetry(gfn)) return null;
        if (FindLeaf(Mirror(gpa), gfn) is not { } hit || hit.Leaf.Writable || !WriteFaultDropsLeaf(slot, hit.Leaf)) return null;
        return RemoveEntry(hit.Page, hit.Index);
    }
}
