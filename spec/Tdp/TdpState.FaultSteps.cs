namespace MmuSpec.Spec.Tdp;

public sealed partial record TdpState
{
    /// <summary>
    /// Step 5's huge leaf of a logging slot (<see cref="Translate"/>): a write fault removes the read-only huge
    /// leaf, then maps 4 KiB below. Under mmu_lock held for read these are two changes (KVM's
    /// tdp_mmu_zap_spte_atomic, then the map): a fault that loses its race after the first answers Retry with the
    /// leaf already gone (RET_PF_RETRY; the next fault maps below). The state after the first change, or null
    /// when a write to <paramref name="gpa"/> does not take that path now.
    /// </summary>
    public TdpState? WriteFaultZapsHugeLeaf(ulong gpa)
    {
        if (gpa >> Config.GpaBits != 0) return null;
        ulong gfn = Gfn(gpa);
        var slot = Slots.Values.FirstOrDefault(s => s.Contains(gfn));
        if (slot is null || slot.ReadOnly || !slot.DirtyLogging || MustRetry(gfn)) return null;
        if (FindLeaf(Mirror(gpa), gfn) is not { } hit || hit.Leaf.Writable || hit.Leaf.Level == 1) return null;
        return RemoveEntry(hit.Page, hit.Index);
    }
}
