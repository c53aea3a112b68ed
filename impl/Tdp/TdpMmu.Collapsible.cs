using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Dirty logging turned off: the links a huge leaf could now replace go, so the next fault maps huge
/// (docs/tdp-model.md, "Dirty logging turned off"; KVM's kvm_tdp_mmu_zap_collapsible_sptes, Linux 6.1-6.12).
/// </summary>
public sealed partial class TdpMmu<TFormat>
{
    /// <summary>
    /// zap_collapsible_spte_range over the slot in both roots: entries at 1 GiB and 2 MiB, top-down, never 4 KiB
    /// ones; a table link whose first gfn lies in the slot and where a fault would now map at the link's level or
    /// above is cleared, its subtree freed and its range flushed (tdp_mmu_zap_spte_atomic flushes the SPTE's range).
    /// </summary>
    private void ZapCollapsible(HostMemslot slot)
    {
        ZapCollapsible(slot, _directRoot, slot.BaseGfn + _sharedGfnMask, slot.EndGfn + _sharedGfnMask);
        ZapCollapsible(slot, _mirrorRoot, slot.BaseGfn, slot.EndGfn);
    }

    private void ZapCollapsible(HostMemslot slot, TableRef root, ulong startFrame, ulong endFrame)
    {
        if (root.IsNull)
            return;
        AssertRoot(root);
        var pages = new TdpTablePages(_pages, _sharedGfnMask, mirror: false); // freeing reads no key
        foreach (PteRef pte in new PteIterator<TFormat>(root, _rootLevel, startFrame, endFrame, minLevel: 2))
        {
            ulong value = pte.Value;
            int level = pte.Level;
            if (level > LargestLeafLevel || !TFormat.IsPresent(value) || TFormat.IsLeaf(value, level))
                continue;
            ulong gfn = pte.Frame & ~_sharedGfnMask;
            if (!slot.Contains(gfn) || FaultLevel(slot, gfn) < level)
                continue; // KVM: iter.gfn outside the slot, or kvm_mmu_max_mapping_level below the entry's level
            pte.Clear(); // the walk reads the entry again before stepping down, so it will not enter the freed table
            RadixTable<TFormat>.FreeTree(ref pages, TableRef.At(TFormat.TableAddress(value), level - 1), level - 1);
            _flushes.Add(gfn, FramesPerEntry(level));
        }
    }

    /// <summary>The level a fault at <paramref name="gfn"/> would map now: the miss's own rule (TdpMmu.Fault.cs), pages moving included.</summary>
    private int FaultLevel(HostMemslot slot, ulong gfn)
    {
        int level = slot.TargetLevel(gfn, _policyLevel);
        if (!_notifier.Quiet)
            SettledLeaf(slot, gfn, ref level);
        return level;
    }
}
