using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Shadow;

/// <summary>What prefetch made of a neighbour (docs/shadow-model.md, "Prefetch"): mapped, or why it ended there.</summary>
public enum PrefetchVerdict
{
    /// <summary>The neighbour is mapped.</summary>
    Mapped,
    /// <summary>The guest entry is not present.</summary>
    NotPresent,
    /// <summary>The guest entry's A bit is clear: the guest has not used it, so the MMU must not either.</summary>
    NotAccessed,
    /// <summary>The guest entry has a reserved bit set (as a 4 KiB leaf under the current controls).</summary>
    ReservedBit,
    /// <summary>The frame is in no memslot (a fault would exit to MMIO; prefetch never does).</summary>
    NoSlot,
    /// <summary>The frame is in a read-only slot (KVM prefetches only host pages it can map writable).</summary>
    ReadOnlySlot,
    /// <summary>The entry would be writable and its slot logs dirty pages (only a fault may log a write).</summary>
    WritableIntoLoggingSlot,
    /// <summary>A direct page's run of frames does not lie in one slot.</summary>
    RunLeavesSlot,
}

// Prefetch: a fill also maps the free neighbours of its leaf (docs/shadow-model.md, "Prefetch").
public sealed partial record ShadowState
{
    /// <summary>KVM's PTE_PREFETCH_NUM: the aligned group of entries a fill looks at around its own.</summary>
    public const int PrefetchGroup = 8;

    /// <summary>
    /// KVM's FNAME(pte_prefetch) (paging_tmpl.h) and __direct_pte_prefetch (mmu.c), run after the fill set
    /// the leaf at <paramref name="faultIndex"/> of level-1 page <paramref name="page"/>. Only entries not
    /// present are mapped: prefetch never overwrites a present entry. An indirect page maps neighbours one by
    /// one, in index order, from the guest entries its table holds, and ends at the first that does not
    /// qualify (KVM breaks out of its loop). A direct page maps each run of free entries at once, from the
    /// frames of the large page the fault walked, with the fault's rights, and ends at the first run that
    /// does not qualify. Guest memory is not written: a neighbour qualifies only when its A bit (and, to be
    /// writable, its D bit) is already set. Model: KVM also marks a prefetched entry not accessed, for
    /// aging; the model's entries have no accessed bit.
    /// </summary>
    ShadowState Prefetch(ShadowKey page, int faultIndex, TranslationRights faultRights)
    {
        int first = faultIndex & ~(PrefetchGroup - 1);
        bool Free(int i) => i != faultIndex && !Pages[page].Entries.ContainsKey(i);
        var state = this;
        if (!page.Role.Direct)
        {
            for (int i = first; i < first + PrefetchGroup; i++)
            {
                if (!Free(i)) continue;
                var (verdict, leaf) = state.PrefetchGuestEntry(page, i);
                if (verdict != PrefetchVerdict.Mapped) break;
                state = state.SetEntry(page, i, leaf!);
            }
            return state;
        }
        for (int start = first; start < first + PrefetchGroup; start++)
        {
            if (!Free(start)) continue;
            int end = start;
            while (end < first + PrefetchGroup && Free(end)) end++;
            if (state.PrefetchDirectRun(page, start, end) != PrefetchVerdict.Mapped) break;
            for (int i = start; i < end; i++)
            {
                ulong gfn = DirectGfn(page, i);
                bool writable = page.Role.Access.HasFlag(Acc.Write) && !state.IsWriteProtected(gfn);
                state = state.SetEntry(page, i, new ShadowEntry.Leaf(gfn, state.SlotMemoryOf(gfn).HostPfn(gfn), faultRights, writable));
            }
            start = end;
        }
        return state;
    }

    /// <summary>
    /// KVM's FNAME(prefetch_gpte) for entry <paramref name="index"/> of indirect level-1 page
    /// <paramref name="page"/>: the guest entry it shadows must be present, accessed and free of reserved
    /// bits (FNAME(prefetch_invalid_gpte)), and map a frame of a slot the MMU may map
    /// (<see cref="PrefetchSlotVerdict"/>). The rights are the page's access folded with the entry's;
    /// KVM's protect_clean_gpte takes write access from a clean entry; and, as for any SPTE KVM makes
    /// writable while prefetching, the gfn must not be write-protected (make_spte never unsyncs for a prefetch).
    /// </summary>
    public (PrefetchVerdict Verdict, ShadowEntry.Leaf? Leaf) PrefetchGuestEntry(ShadowKey page, int index)
    {
        var c = GuestCpu!.Controls;
        bool fourByte = page.Role.Has4ByteGpte;
        ulong gpa = (page.Gfn << 12) + (ulong)(fourByte ? (512 * page.Role.Quadrant + index) * 4 : index * 8);
        var gpte = new PagingEntry(ReadGuest(gpa, fourByte ? 4 : 8));
        if (!gpte.Present) return (PrefetchVerdict.NotPresent, null);
        if (!gpte.IsAccessed) return (PrefetchVerdict.NotAccessed, null);
        if ((gpte.Raw & ReservedBits.Mask(c, 1, mapsPage: true)) != 0) return (PrefetchVerdict.ReservedBit, null);
        ulong gfn = PagingLevels.FrameAddress(c, 1, gpte, mapsPage: true) >> 12;
        var rights = PageWalk.FoldRights(c, page.Role.Access.ToRights(), gpte);
        bool writeAccess = rights.Writable && gpte.IsDirty;
        var verdict = PrefetchSlotVerdict(gfn, 1, writeAccess);
        if (verdict != PrefetchVerdict.Mapped) return (verdict, null);
        return (verdict, new ShadowEntry.Leaf(gfn, SlotMemoryOf(gfn).HostPfn(gfn), rights, writeAccess && !IsWriteProtected(gfn)));
    }

    /// <summary>
    /// KVM's direct_pte_prefetch_many for the free entries [<paramref name="start"/>, <paramref name="end"/>)
    /// of direct level-1 page <paramref name="page"/>: their frames, consecutive, with the page's access.
    /// </summary>
    public PrefetchVerdict PrefetchDirectRun(ShadowKey page, int start, int end) =>
        PrefetchSlotVerdict(DirectGfn(page, start), (ulong)(end - start), page.Role.Access.HasFlag(Acc.Write));

    /// <summary>
    /// Whether <paramref name="count"/> frames from <paramref name="gfn"/> may be prefetched with or without
    /// <paramref name="writeAccess"/> (KVM's kvm_mmu_prefetch_sptes): one slot holds them all
    /// (gfn_to_memslot_dirty_bitmap, kvm_prefetch_pages), it is not read-only (the host pages are taken
    /// writable), and it does not log dirty pages when the entries would be writable.
    /// </summary>
    PrefetchVerdict PrefetchSlotVerdict(ulong gfn, ulong count, bool writeAccess)
    {
        if (SlotMemory.SlotOf(Slots, gfn) is not { } slot) return PrefetchVerdict.NoSlot;
        if (writeAccess && slot.DirtyLogging) return PrefetchVerdict.WritableIntoLoggingSlot;
        if (slot.ReadOnly) return PrefetchVerdict.ReadOnlySlot;
        if (slot.EndGfn - gfn < count) return PrefetchVerdict.RunLeavesSlot;
        return PrefetchVerdict.Mapped;
    }

    HostMemslot SlotMemoryOf(ulong gfn) => SlotMemory.SlotOf(Slots, gfn)!;

    /// <summary>The level-1 page at the end of <paramref name="gva"/>'s shadow path in the current root, or null.</summary>
    public ShadowKey? LevelOnePageFor(ulong gva)
    {
        if (GuestCpu is null) return null;
        var page = RootPageFor(gva);
        for (int level = RootLevel; level > 1 && page is not null; level--)
            page = Pages.GetValueOrDefault(page)?.Entries.GetValueOrDefault(ShadowIndex(level, gva)) is ShadowEntry.Table t ? t.Child : null;
        return page;
    }
}
