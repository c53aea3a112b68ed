using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>Neighbouring-entry prefetch after a fill: docs/shadow-model.md, "Prefetch".</summary>
internal sealed partial class ShadowMmu
{
    /// <summary>KVM's PTE_PREFETCH_NUM.</summary>
    private const int PrefetchGroup = 8;

    private const ulong PresentAndAccessed = PagingEntryBits.Present | PagingEntryBits.Accessed;

    private readonly bool _prefetch;

    public bool Prefetch => _prefetch;

    /// <summary>
    /// KVM's FNAME(pte_prefetch) / __direct_pte_prefetch after the fill set entry <paramref name="faultIndex"/>
    /// of level-1 page <paramref name="page"/>: the free entries of its aligned group of 8, in index order,
    /// until one does not qualify. Never overwrites a present entry, never writes guest memory, never unsyncs.
    /// </summary>
    private void PrefetchNeighbours(ShadowPage page, int faultIndex, uint faultRights, uint faultKey)
    {
        int first = faultIndex & ~(PrefetchGroup - 1);
        if (page.Direct)
        {
            PrefetchDirect(page, first, faultIndex, faultRights, faultKey);
            return;
        }
        WalkContext ctx = _guest!.Context;
        ShadowRole role = page.Role;
        int entryBytes = role.Has4ByteGpte ? sizeof(uint) : sizeof(ulong);
        // The guest table's entries for this page: a 32-bit guest's level-1 page shadows half of its table.
        ulong tableGpa = (page.Gfn << PageShift) + (role.Has4ByteGpte ? (ulong)(ShadowPage.Entries * role.Quadrant * sizeof(uint)) : 0);
        for (int i = first; i < first + PrefetchGroup; i++)
        {
            if (i == faultIndex || ShadowSpte.IsPresent(page.Spte(i)))
                continue;
            // FNAME(prefetch_invalid_gpte): present, accessed, no reserved bit; any failure ends the prefetch.
            ulong gpte = ReadGuestEntry(tableGpa + (ulong)(i * entryBytes), entryBytes);
            int pageSizeBit = (int)(gpte >> PagingEntryBits.PageSizeShift) & 1;
            if ((gpte & PresentAndAccessed) != PresentAndAccessed || (gpte & ctx.Reserved.Mask(pageSizeBit, 1)) != 0)
                return;
            ulong gfn = (gpte & ctx.Levels[1].LeafAddressMask) >> PageShift;
            uint rights = role.Access & AccessRights.OfEntry(gpte);
            bool writeAccess = (rights & AccessRights.Write) != 0 && (gpte & PagingEntryBits.Dirty) != 0; // protect_clean_gpte
            HostMemslot? slot = FindSlot(gfn);
            if (!MayPrefetch(slot, gfn, 1, writeAccess))
                return;
            uint key = (uint)(gpte >> PagingEntryBits.ProtectionKeyShift) & ctx.ProtectionKeyMask;
            ulong offset = gfn - slot.BaseGfn;
            SetLeaf(page, i, gfn, slot.HostPfnBase + offset, rights, key, writeAccess && !IsWriteProtected(gfn), _rmapsById[slot.Id]!, offset);
        }
    }

    /// <summary>A direct page: each run of free entries at once, the large page's consecutive frames with the fault's rights.</summary>
    private void PrefetchDirect(ShadowPage page, int first, int faultIndex, uint rights, uint key)
    {
        bool writeAccess = (page.Role.Access & AccessRights.Write) != 0;
        int end = first + PrefetchGroup;
        for (int start = first; start < end; start++)
        {
            if (start == faultIndex || ShadowSpte.IsPresent(page.Spte(start)))
                continue;
            int stop = start + 1;
            while (stop < end && stop != faultIndex && !ShadowSpte.IsPresent(page.Spte(stop)))
                stop++;
            ulong gfn = EntryGfn(page, start);
            HostMemslot? slot = FindSlot(gfn);
            if (!MayPrefetch(slot, gfn, (ulong)(stop - start), writeAccess))
                return;
            SlotRmap rmap = _rmapsById[slot.Id]!;
            for (int i = start; i < stop; i++, gfn++)
            {
                ulong offset = gfn - slot.BaseGfn;
                SetLeaf(page, i, gfn, slot.HostPfnBase + offset, rights, key, writeAccess && !IsWriteProtected(gfn), rmap, offset);
            }
            start = stop;
        }
    }

    /// <summary>
    /// KVM's kvm_mmu_prefetch_sptes: one slot holds all <paramref name="count"/> frames, it is not read-only
    /// (the host pages are taken writable), and it does not log dirty pages when the entries would be writable.
    /// </summary>
    private static bool MayPrefetch([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] HostMemslot? slot, ulong gfn, ulong count, bool writeAccess) =>
        slot is not null && !(writeAccess && slot.DirtyLogging) && !slot.ReadOnly && slot.EndGfn - gfn >= count;
}
