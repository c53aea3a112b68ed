namespace MmuSpec.Impl.Nested;

/// <summary>
/// Write flooding and page zaps (docs/nested-ept.md, "Write flooding and recycling"), KVM's kvm_mmu_track_write and
/// __kvm_mmu_prepare_zap_page for shadow EPT pages. An L1 store into a write-tracked EPT table counts against every
/// upper-level page shadowing it; a page L1 writes three times without a fault going through it is taken for a
/// table L1 no longer uses as one and is zapped whole (detect_write_flooding), as the shadow MMU does
/// (ShadowMmu.TrackedWrite). The count starts again when a fault walks through the page (FNAME(fetch)), when the hash
/// finds it (kvm_mmu_find_shadow_page) and when a cached root is switched in (kvm_mmu_new_pgd). A zap is transparent
/// to L2: the next access walks L1's EPT again and rebuilds what it needs.
/// <para>
/// Misaligned stores (detect_write_misaligned) cannot happen here: <see cref="L1Store"/> takes only aligned 4- and
/// 8-byte stores, which stay within one 8-byte EPT entry.
/// </para>
/// </summary>
internal sealed unsafe partial class NestedEptMmu
{
    // KVM's detect_write_flooding threshold, as in the shadow MMU.
    private const int FloodingLimit = 3;

    // The pages of one written table, copied before any zap (a zap edits _tracked's lists); reused, so a store allocates nothing.
    private NestedShadowPage[] _writtenPages = new NestedShadowPage[4];

    private long _zappedForFlooding, _orphansZapped, _pagesZapped;

    /// <summary>
    /// kvm_mmu_track_write for an L1 store at <paramref name="gpa"/> into a table shadowed by <paramref name="pages"/>:
    /// an upper-level page is zapped once flooded, every other page drops the entry built from the one written (both
    /// halves of an 8-byte entry land in one index). Last-level pages never flood: they may go unsync instead.
    /// </summary>
    private void TrackWrite(List<NestedShadowPage> pages, ulong gpa)
    {
        int count = pages.Count;
        if (_writtenPages.Length < count)
            _writtenPages = new NestedShadowPage[count * 2];
        pages.CopyTo(_writtenPages);
        int index = (int)((gpa & 0xFFF) >> 3);
        for (int k = 0; k < count; k++)
        {
            var page = _writtenPages[k];
            _writtenPages[k] = null!;
            if (!page.Live)
                continue; // zapped below another page of this table (a table that maps itself)
            if (page.Role.Level > 1 && ++page.WriteFlooding >= FloodingLimit)
            {
                _zappedForFlooding++;
                ZapPage(page);
                continue;
            }
            DropEntry(page, index);
        }
    }

    /// <summary>
    /// __kvm_mmu_prepare_zap_page then the commit: the unsync pages below go (mmu_zap_unsync_children); each child loses
    /// its link and, left without a parent, is zapped too (upstream 2de4085cccea: a parentless nested page is unlikely
    /// to be used again, and would stay hashed until the page limit); the parents' entries go; a cached root on the
    /// page is dropped (KVM marks it invalid and the vCPU frees its obsolete roots before the next entry, so the current
    /// EPTP reloads on the next access); the page leaves the hash, write tracking and the age list, and its native table
    /// goes back to the pool.
    /// </summary>
    private void ZapPage(NestedShadowPage page)
    {
        if (page.Role.Level > 1 && _unsync.Count > 0)
            ZapUnsyncBelow(page);
        if (page.Children is NestedShadowPage?[] children)
        {
            for (int i = 0; i < NestedShadowPage.Entries; i++)
            {
                if (children[i] is not NestedShadowPage child)
                    continue;
                DropEntry(page, i);
                if (child.Parents.Count == 0 && child.Live)
                {
                    _orphansZapped++;
                    ZapPage(child);
                }
            }
        }
        while (page.Parents.Count > 0)
        {
            var (parent, index) = page.Parents[^1];
            DropEntry(parent, index);
        }
        if (page.RootCount > 0)
            DropRootsOn(page);
        _hash.Remove((page.Gfn, page.Role.Bits));
        if (!page.Role.Direct && _tracked.TryGetValue(page.Gfn, out var list))
        {
            list.Remove(page);
            if (list.Count == 0)
                _tracked.Remove(page.Gfn);
        }
        if (page.Unsync)
        {
            page.Unsync = false;
            _unsync.Remove(page);
        }
        Deactivate(page);
        page.Free();
        _pagesZapped++;
    }

    /// <summary>mmu_zap_unsync_children: every unsync page linked below <paramref name="top"/> is zapped with it.</summary>
    private void ZapUnsyncBelow(NestedShadowPage top)
    {
        foreach (var page in _unsync.ToArray())
            if (page.Live && page != top && Reaches(top, page))
                ZapPage(page);
    }

    /// <summary>The cached roots on a zapped page: the current one goes (the next access reloads the EPTP's root), previous ones are forgotten.</summary>
    private void DropRootsOn(NestedShadowPage page)
    {
        if (_root == page)
        {
            _root = null;
            page.RootCount--;
        }
        for (int i = _previous.Count - 1; i >= 0; i--)
        {
            if (_previous[i].Root == page)
            {
                _previous.RemoveAt(i);
                page.RootCount--;
            }
        }
    }

    /// <summary>A fault went through <paramref name="page"/>, or the hash or a root switch found it: L1 still uses its table as one.</summary>
    private static void InUse(NestedShadowPage page) => page.WriteFlooding = 0;
}
