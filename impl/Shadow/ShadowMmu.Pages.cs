using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>Shadow pages and the rules over them: docs/shadow-model.md, "Definitions used by the rules".</summary>
internal sealed partial class ShadowMmu
{
    private const int IndexBits = 9;
    private const int IndexMask = ShadowPage.Entries - 1;
    private const int TranslationGfnShift = 12;

    private long _livePages;

    // Zapped pages awaiting their free, linked through HashNext (they are out of the hash).
    private ShadowPage _zapped;

    // Reused by tracked writes for "the indirect pages of gfn, in key order": grows, never shrinks.
    private nint[] _scratch = new nint[16];

    public long ShadowPages => _livePages;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int IndexAt(ulong gva, int level) => (int)(gva >> (PageShift + IndexBits * (level - 1))) & IndexMask;

    /// <summary>
    /// The gfn entry <paramref name="index"/> maps or links: a direct page by the contract's formula
    /// gfn + (quadrant &lt;&lt; 9) + (i &lt;&lt; 9(L-1)); an indirect page's leaf by its recorded translation.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong EntryGfn(ShadowPage page, int index)
    {
        ShadowRole role = page.Role;
        if (role.Direct)
            return page.Gfn + ((ulong)role.Quadrant << IndexBits) + ((ulong)index << (IndexBits * (role.Level - 1)));
        return page.Translation(index) >> TranslationGfnShift;
    }

    // ---- reverse maps ----

    private SlotRmap? RmapOf(ulong gfn, out ulong offset)
    {
        HostMemslot? slot = FindSlot(gfn);
        offset = slot is null ? 0 : gfn - slot.BaseGfn;
        return slot is null ? null : _rmapsById[slot.Id];
    }

    private void AddRmap(SlotRmap rmap, ulong offset, SpteRef leaf)
    {
        ref ulong head = ref rmap.Head(offset);
        if (head == 0)
            rmap.NonEmpty++;
        _lists.Add(ref head, leaf);
    }

    private void RemoveRmap(ulong gfn, SpteRef leaf)
    {
        SlotRmap? rmap = RmapOf(gfn, out ulong offset);
        Debug.Assert(rmap is not null, "a leaf maps a gfn outside every slot");
        ref ulong head = ref rmap.Head(offset);
        _lists.Remove(ref head, leaf);
        if (head == 0)
            rmap.NonEmpty--;
    }

    /// <summary>Write-protect G: every leaf with gfn == G gets writable = false (through G's rmap).</summary>
    private void WriteProtect(ulong gfn)
    {
        SlotRmap? rmap = RmapOf(gfn, out ulong offset);
        if (rmap is null)
            return; // no leaf maps a gfn outside every slot
        foreach (SpteRef leaf in PteListPool.Enumerate(rmap.Head(offset)))
            leaf.Value &= ~ShadowSpte.Writable;
    }

    private void WriteProtectSlot(HostMemslot slot)
    {
        SlotRmap rmap = _rmapsById[slot.Id]!;
        if (rmap.NonEmpty == 0)
            return;
        for (ulong offset = 0; offset < slot.Pages; offset++)
        {
            foreach (SpteRef leaf in PteListPool.Enumerate(rmap.Head(offset)))
                leaf.Value &= ~ShadowSpte.Writable;
        }
    }

    // ---- entries ----

    /// <summary>
    /// Entry <paramref name="index"/> becomes a leaf (level 1), replacing whatever was there.
    /// <paramref name="rmap"/> and <paramref name="offset"/> are gfn's, from the slot the fault already found.
    /// </summary>
    private void SetLeaf(ShadowPage page, int index, ulong gfn, ulong hostPfn, uint rights, uint key, bool writable, SlotRmap rmap, ulong offset)
    {
        Debug.Assert(RmapOf(gfn, out ulong expected) == rmap && expected == offset, "the rmap given is not gfn's");
        Debug.Assert(page.Level == 1, "leaves only at level 1");
        Debug.Assert(!page.Direct || EntryGfn(page, index) == gfn, "a direct page's leaf must map the gfn its formula gives (the rmap is keyed by it)");
        ref ulong spte = ref page.Spte(index);
        bool sameGfn = ShadowSpte.IsLeaf(spte) && EntryGfn(page, index) == gfn;
        if (ShadowSpte.IsPresent(spte) && !sameGfn)
            RemoveEntry(page, index);
        spte = ShadowSpte.MakeLeaf(hostPfn, rights, key, writable);
        if (!page.Direct)
            page.Translation(index) = (gfn << TranslationGfnShift) | rights;
        if (!sameGfn)
            AddRmap(rmap, offset, page.EntryRef(index));
    }

    /// <summary>Links <paramref name="child"/> at entry <paramref name="index"/> (KVM's link_shadow_page).</summary>
    private void Link(ShadowPage page, int index, ShadowPage child)
    {
        ref ulong spte = ref page.Spte(index);
        Debug.Assert(!ShadowSpte.IsPresent(spte), "linking over a present entry");
        Debug.Assert(child.Level == page.Level - 1, "a child is one level down");
        spte = ShadowSpte.MakeTable(child);
        _lists.Add(ref child.Header.Parents, page.EntryRef(index));
        if (HasUnsyncSubtree(child))
            SetUnsyncChild(page, index);
    }

    /// <summary>Removes a present entry: a leaf leaves its rmap; a link leaves the child's parent list (the child stays).</summary>
    private void RemoveEntry(ShadowPage page, int index)
    {
        ref ulong spte = ref page.Spte(index);
        ulong value = spte;
        if (!ShadowSpte.IsPresent(value))
            return;
        if (ShadowSpte.IsLeaf(value))
        {
            RemoveRmap(EntryGfn(page, index), page.EntryRef(index));
            spte = 0;
            if (!page.Direct)
                page.Translation(index) = 0;
            return;
        }
        ShadowPage child = ShadowSpte.Child(value);
        spte = 0;
        _lists.Remove(ref child.Header.Parents, page.EntryRef(index));
        if (!page.Direct)
            ClearUnsyncChild(page, index);
    }

    // ---- unsync bookkeeping (exact: bit i set iff entry i links a subtree holding an unsync page) ----

    private static bool HasUnsyncSubtree(ShadowPage page) =>
        page.Unsync || (!page.Direct && page.Extra.UnsyncChildCount != 0);

    private void SetUnsyncChild(ShadowPage page, int index)
    {
        if (page.Direct)
        {
            Debug.Fail("a direct page's subtree never holds an unsync page");
            return;
        }
        ref IndirectExtra extra = ref page.Extra;
        ref ulong word = ref extra.UnsyncChildren[index >> 6];
        ulong bit = 1UL << (index & 63);
        if ((word & bit) != 0)
            return;
        word |= bit;
        if (extra.UnsyncChildCount++ == 0 && !page.Unsync)
        {
            foreach (SpteRef parent in PteListPool.Enumerate(page.Header.Parents))
                SetUnsyncChild(parent.Page, parent.Index);
        }
    }

    private void ClearUnsyncChild(ShadowPage page, int index)
    {
        ref IndirectExtra extra = ref page.Extra;
        ref ulong word = ref extra.UnsyncChildren[index >> 6];
        ulong bit = 1UL << (index & 63);
        if ((word & bit) == 0)
            return;
        word &= ~bit;
        if (--extra.UnsyncChildCount == 0 && !page.Unsync)
        {
            foreach (SpteRef parent in PteListPool.Enumerate(page.Header.Parents))
                ClearUnsyncChild(parent.Page, parent.Index);
        }
    }

    private void MarkUnsync(ShadowPage page)
    {
        Debug.Assert(!page.Unsync && page.Level == 1 && !page.Direct, "only sync indirect level-1 pages go unsync");
        bool had = HasUnsyncSubtree(page);
        page.Header.SetUnsync(true);
        if (!had)
        {
            foreach (SpteRef parent in PteListPool.Enumerate(page.Header.Parents))
                SetUnsyncChild(parent.Page, parent.Index);
        }
    }

    private void MarkSync(ShadowPage page)
    {
        page.Header.SetUnsync(false);
        if (!HasUnsyncSubtree(page))
        {
            foreach (SpteRef parent in PteListPool.Enumerate(page.Header.Parents))
                ClearUnsyncChild(parent.Page, parent.Index);
        }
    }

    // ---- write tracking ----

    /// <summary>G is write-protected iff some indirect page of G is not unsync.</summary>
    private bool IsWriteProtected(ulong gfn)
    {
        for (ShadowPage p = _hash.Bucket(gfn); !p.IsNull; p = p.HashNext)
        {
            if (p.Gfn == gfn && !p.Direct && !p.Unsync)
                return true;
        }
        return false;
    }

    /// <summary>KVM's mmu_try_to_unsync_pages.</summary>
    private bool TryUnsync(ulong gfn)
    {
        for (ShadowPage p = _hash.Bucket(gfn); !p.IsNull; p = p.HashNext)
        {
            if (p.Gfn != gfn || p.Direct)
                continue;
            if (p.Level > 1 || (!_allowUnsync && !p.Unsync))
                return false;
        }
        for (ShadowPage p = _hash.Bucket(gfn); !p.IsNull; p = p.HashNext)
        {
            if (p.Gfn == gfn && !p.Direct && !p.Unsync)
                MarkUnsync(p);
        }
        return true;
    }

    // ---- sync ----

    /// <summary>KVM's sync_spte for entry <paramref name="index"/> of an unsync level-1 page.</summary>
    private void SyncEntry(ShadowPage page, int index)
    {
        ulong spte = page.Spte(index);
        if (!ShadowSpte.IsPresent(spte))
            return;
        Debug.Assert(ShadowSpte.IsLeaf(spte) && page.Level == 1 && !page.Direct, "only indirect level-1 pages are synced");
        WalkContext ctx = _guest!.Context;
        ShadowRole role = page.Role;
        ulong gpte;
        if (role.Has4ByteGpte)
        {
            ulong gpa = (page.Gfn << PageShift) + (ulong)(ShadowPage.Entries * role.Quadrant + index) * sizeof(uint);
            _guestMemory.TryRead32(gpa, out uint narrow); // a gpa in no slot reads 0
            gpte = narrow;
        }
        else
        {
            _guestMemory.TryRead64((page.Gfn << PageShift) + (ulong)index * sizeof(ulong), out gpte);
        }
        ulong gfn = EntryGfn(page, index);
        int pageSizeBit = (int)(gpte >> PagingEntryBits.PageSizeShift) & 1;
        if ((gpte & PagingEntryBits.Present) == 0
            || (gpte & ctx.Reserved.Mask(pageSizeBit, 1)) != 0
            || (gpte & PagingEntryBits.Accessed) == 0
            || (gpte & ctx.Levels[1].LeafAddressMask) >> PageShift != gfn)
        {
            RemoveEntry(page, index);
            return;
        }
        uint rights = role.Access & AccessRights.OfEntry(gpte);
        uint key = (uint)(gpte >> PagingEntryBits.ProtectionKeyShift) & ctx.ProtectionKeyMask;
        page.Spte(index) = ShadowSpte.MakeLeaf(ShadowSpte.HostPfn(spte), rights, key, writable: false);
        page.Translation(index) = (gfn << TranslationGfnShift) | rights;
    }

    /// <summary>Sync page: every entry, then the page is sync and its gfn write-protected.</summary>
    private void SyncPage(ShadowPage page)
    {
        Debug.Assert(page.Unsync, "syncing a sync page");
        for (int i = 0; i < ShadowPage.Entries; i++)
            SyncEntry(page, i);
        MarkSync(page);
        WriteProtect(page.Gfn);
    }

    /// <summary>Syncs every unsync page below <paramref name="page"/>, led by the unsync-children bitmaps (KVM's mmu_sync_children).</summary>
    private void SyncChildren(ShadowPage page)
    {
        Debug.Assert(page.Live, "syncing below a page that is not live");
        // The count is exact, so a page with nothing unsync below costs one load (a flush of a clean root).
        if (page.Direct || page.Level == 1 || page.Extra.UnsyncChildCount == 0)
            return;
        for (int w = 0; w < UnsyncChildBits.Words; w++)
        {
            ulong done = 0; // bits already handled: termination does not depend on the bookkeeping
            ulong bits;
            while ((bits = page.Extra.UnsyncChildren[w] & ~done) != 0)
            {
                int bit = BitOperations.TrailingZeroCount(bits);
                done |= 1UL << bit;
                ShadowPage child = ShadowSpte.Child(page.Spte(w * 64 + bit));
                if (child.Unsync)
                    SyncPage(child);
                else
                    SyncChildren(child);
                Debug.Assert((page.Extra.UnsyncChildren[w] & (1UL << bit)) == 0, "unsync bit survived its subtree's sync");
            }
        }
    }

    // ---- zap ----

    /// <summary>Zap page (KVM's kvm_mmu_prepare_zap_page); the page is freed when the operation ends.</summary>
    private void ZapPage(ShadowPage page)
    {
        if (!page.Live)
            return;
        ZapUnsyncChildren(page);
        for (int i = 0; i < ShadowPage.Entries; i++)
            RemoveEntry(page, i);
        while (page.Header.Parents != 0)
        {
            SpteRef link = PteListPool.First(page.Header.Parents);
            RemoveEntry(link.Page, link.Index);
        }
        _hash.Remove(page);
        page.Header.MarkZapped();
        page.Header.HashNext = _zapped.Address;
        _zapped = page;
        _livePages--;
        FreeRootsWithPage(page);
    }

    /// <summary>Zaps every unsync page reachable from <paramref name="page"/> (KVM's mmu_zap_unsync_children).</summary>
    private void ZapUnsyncChildren(ShadowPage page)
    {
        if (page.Direct || page.Level == 1)
            return;
        for (int w = 0; w < UnsyncChildBits.Words; w++)
        {
            ulong done = 0;
            ulong bits;
            while ((bits = page.Extra.UnsyncChildren[w] & ~done) != 0)
            {
                int bit = BitOperations.TrailingZeroCount(bits);
                done |= 1UL << bit;
                ShadowPage child = ShadowSpte.Child(page.Spte(w * 64 + bit));
                if (child.Unsync)
                    ZapPage(child);
                else
                    ZapUnsyncChildren(child);
            }
        }
    }

    /// <summary>Every page goes and every root is freed, wholesale: no page's links need undoing one by one.</summary>
    private void ZapAllPages()
    {
        foreach (ShadowPage page in _pages.PagesInUseList())
        {
            if (page.Live)
            {
                for (int i = 0; i < ShadowPage.Entries; i++)
                {
                    ulong spte = page.Spte(i);
                    if (!ShadowSpte.IsLeaf(spte))
                        continue;
                    SlotRmap? rmap = RmapOf(EntryGfn(page, i), out ulong offset);
                    Debug.Assert(rmap is not null, "a leaf maps a gfn outside every slot");
                    ref ulong head = ref rmap.Head(offset);
                    if (head != 0)
                    {
                        _lists.Clear(ref head);
                        rmap.NonEmpty--;
                    }
                }
                _lists.Clear(ref page.Header.Parents);
            }
            _pages.Free(page);
        }
        _zapped = default;
        _hash.Clear();
        _livePages = 0;
        FreeAllRoots();
    }

    /// <summary>Frees the pages zapped during this operation (KVM's kvm_mmu_commit_zap_page).</summary>
    private void CommitZapped()
    {
        while (!_zapped.IsNull)
        {
            ShadowPage page = _zapped;
            Debug.Assert(!IsRootPage(page), "a zapped page is still a cached root's page");
            _zapped = page.HashNext;
            page.Header.HashNext = 0;
            _pages.Free(page);
        }
    }

    // ---- get page ----

    /// <summary>Get page (KVM's kvm_mmu_get_shadow_page).</summary>
    private ShadowPage GetPage(ulong gfn, ShadowRole role)
    {
        if (role.Level > 1)
        {
            // 1. An upper-level page for this gfn is wanted (KVM: direct roles too): its unsync pages go.
            bool zapped;
            do
            {
                zapped = false;
                for (ShadowPage p = _hash.Bucket(gfn); !p.IsNull; p = p.HashNext)
                {
                    if (p.Gfn == gfn && p.Unsync)
                    {
                        ZapPage(p); // changes the bucket: rescan
                        zapped = true;
                        break;
                    }
                }
            }
            while (zapped);
        }

        ShadowPage found = _hash.Find(gfn, role);
        if (!found.IsNull)
        {
            // Linking a page must not make stale translations reachable (the guest need not flush after
            // making an entry present): the page itself, or every unsync page below it, is synced first
            // (KVM: kvm_sync_page on lookup, mmu_sync_children before link_shadow_page).
            if (found.Unsync)
                SyncPage(found); // model: synced and left sync
            else
                SyncChildren(found);
            if (!found.Direct)
                found.Extra.WriteFlooding = 0; // found again: in use as a table
            return found;
        }

        ShadowPage page = _pages.Allocate(role.Direct);
        page.Header.Init(gfn, role);
        _hash.Add(page);
        _livePages++;
        _pagesCreated++;
        if (!role.Direct)
            WriteProtect(gfn);
        return page;
    }

    private static ShadowRole BaseRole(in PagingControls c) => ShadowRole.Create(
        level: 1, has4ByteGpte: c.Mode == PagingMode.Bits32, quadrant: 0, direct: false, access: ShadowRole.AccAll,
        eferNx: c.EferNxe, cr0Wp: c.Cr0Wp, smepAndNotWp: c.Cr4Smep && !c.Cr0Wp, smapAndNotWp: c.Cr4Smap && !c.Cr0Wp);

    /// <summary>The level-1 page at the end of gva's shadow path from root page <paramref name="page"/>, or none when a table entry is missing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ShadowPage PathLevel1(ShadowPage page, ulong gva)
    {
        if (page.IsNull)
            return default;
        for (int level = page.Level; level > 1; level--)
        {
            ulong spte = page.Spte(IndexAt(gva, level));
            if (!ShadowSpte.IsTable(spte))
                return default;
            page = ShadowSpte.Child(spte);
        }
        return page;
    }
}
