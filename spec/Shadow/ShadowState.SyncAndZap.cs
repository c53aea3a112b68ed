using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Shadow;

// Write protection, unsync and sync, zap and get page (docs/shadow-model.md, "Sync and zap").
public sealed partial record ShadowState
{
    /// <summary>The pages that shadow guest table <paramref name="gfn"/>.</summary>
    public IEnumerable<ShadowPage> IndirectPagesOf(ulong gfn) =>
        Pages.Values.Where(p => !p.Key.Role.Direct && p.Key.Gfn == gfn);

    /// <summary>Some page shadowing <paramref name="gfn"/> is sync, so guest writes to it must trap.</summary>
    public bool IsWriteProtected(ulong gfn) => IndirectPagesOf(gfn).Any(p => !p.Unsync);

    /// <summary>Every leaf mapping <paramref name="gfn"/> loses the MMU's W bit.</summary>
    ShadowState WriteProtect(ulong gfn) => UpdateLeaves(l => l.Writable && l.Gfn == gfn, l => l.WithWritable(false));

    /// <summary>
    /// KVM's mmu_try_to_unsync_pages: a guest table may be written without trapping only if every
    /// page shadowing it is a level-1 page (KVM: the gfn is not write-tracked, which upper-level pages
    /// make it); those pages go unsync.
    /// </summary>
    (bool Unsynced, ShadowState State) TryUnsync(ulong gfn)
    {
        var pages = IndirectPagesOf(gfn).ToList();
        if (pages.Any(p => p.Key.Role.Level > 1)) return (false, this);
        if (!Config.AllowUnsync && pages.Any(p => !p.Unsync)) return (false, this);
        var state = this;
        foreach (var p in pages.Where(p => !p.Unsync)) state = state.SetPage(p.WithUnsync(true));
        return (true, state);
    }

    /// <summary>
    /// KVM's sync_spte: entry <paramref name="index"/> of unsync leaf page <paramref name="key"/> is
    /// brought in line with the guest entry it shadows, or removed if that entry no longer maps the
    /// same frame validly.
    /// </summary>
    ShadowState SyncEntry(ShadowKey key, int index)
    {
        if (Pages[key].Entries.GetValueOrDefault(index) is not ShadowEntry.Leaf leaf) return this;
        var c = GuestCpu!.Controls;
        bool fourByte = key.Role.Has4ByteGpte;
        ulong gpa = (key.Gfn << 12) + (ulong)(fourByte ? (512 * key.Role.Quadrant + index) * 4 : index * 8);
        var gpte = new PagingEntry(ReadGuest(gpa, fourByte ? 4 : 8));
        bool same = gpte.Present
            && (gpte.Raw & ReservedBits.Mask(c, 1, mapsPage: true)) == 0
            && gpte.IsAccessed
            && PagingLevels.FrameAddress(c, 1, gpte, mapsPage: true) >> 12 == leaf.Gfn;
        if (!same) return RemoveEntry(key, index);
        var rights = PageWalk.FoldRights(c, key.Role.Access.ToRights(), gpte);
        return SetEntry(key, index, leaf with { Rights = rights, Writable = false });
    }

    /// <summary>Sync page: every entry synced, then the page is sync again and its gfn write-protected.</summary>
    ShadowState SyncPage(ShadowKey key)
    {
        var state = this;
        foreach (int index in Pages[key].Entries.Keys) state = state.SyncEntry(key, index);
        return state.SetPage(state.Pages[key].WithUnsync(false)).WriteProtect(key.Gfn);
    }

    /// <summary>The pages reachable from <paramref name="starts"/> through table entries, the starts included.</summary>
    public IEnumerable<ShadowKey> Reachable(IEnumerable<ShadowKey> starts)
    {
        var seen = new SortedSet<ShadowKey>();
        var work = new Stack<ShadowKey>(starts);
        while (work.Count > 0)
        {
            var key = work.Pop();
            if (!Pages.ContainsKey(key) || !seen.Add(key)) continue;
            foreach (var t in Pages[key].Entries.Values.OfType<ShadowEntry.Table>()) work.Push(t.Child);
        }
        return seen;
    }

    /// <summary>Every (page, index) whose entry links <paramref name="child"/>: the parent list, by scan.</summary>
    public IEnumerable<(ShadowKey Page, int Index)> LinksTo(ShadowKey child) =>
        from p in Pages.Values
        from e in p.Entries
        where e.Value is ShadowEntry.Table t && t.Child.Equals(child)
        select (p.Key, e.Key);

    /// <summary>Every leaf of every page: the reverse map, by scan.</summary>
    public IEnumerable<(ShadowKey Page, int Index, ShadowEntry.Leaf Leaf)> Leaves() =>
        from p in Pages.Values
        from e in p.Entries
        where e.Value is ShadowEntry.Leaf
        select (p.Key, e.Key, (ShadowEntry.Leaf)e.Value);

    /// <summary>
    /// KVM's kvm_mmu_prepare_zap_page: the page's unsync descendants are zapped, its entries and the
    /// entries linking it are removed, and the page goes; if it was a root page, the root goes too.
    /// </summary>
    ShadowState ZapPage(ShadowKey key)
    {
        if (!Pages.ContainsKey(key)) return this;
        var state = this;
        foreach (var d in Reachable([key]).Where(k => !k.Equals(key) && Pages[k].Unsync).ToList())
            state = state.ZapPage(d);
        foreach (var (parent, index) in state.LinksTo(key).ToList())
            state = state.RemoveEntry(parent, index);
        state = state with { Pages = state.Pages.Remove(key) };
        // A root whose page goes is freed (model: KVM marks the page invalid and frees the root later).
        return state with { Roots = state.Roots.Free(r => r.Holds(key)) };
    }

    /// <summary>KVM's kvm_mmu_get_shadow_page: find the page with this gfn and role, or create it.</summary>
    ShadowState GetPage(ShadowKey key)
    {
        var state = this;
        // An upper-level page for this gfn is wanted: unsync leaf pages of it must go (the guest has
        // most likely stopped using it as a page table). KVM does this for direct roles too.
        if (key.Role.Level > 1)
            foreach (var stale in state.Pages.Values.Where(p => p.Unsync && p.Key.Gfn == key.Gfn).Select(p => p.Key).ToList())
                state = state.ZapPage(stale);
        if (state.Pages.ContainsKey(key))
        {
            // Linking a page must not make stale translations reachable: the guest need not flush
            // after making an entry present (KVM: kvm_sync_page, and mmu_sync_children before linking).
            foreach (var unsync in state.Reachable([key]).Where(k => state.Pages[k].Unsync).ToList())
                state = state.SyncPage(unsync);
            // A page found again is in use as a table: its write-flooding count starts again.
            return state.SetPage(state.Pages[key].WithWriteFlooding(0));
        }
        state = state with { Pages = state.Pages.Add(key, ShadowPage.Empty(key)) };
        return key.Role.Direct ? state : state.WriteProtect(key.Gfn);
    }

    /// <summary>Every page goes and every root is freed (ZapAll; memslot deletes and moves, KVM's default quirk).</summary>
    ShadowState ZapAllPages() => this with { Pages = Pages.Clear(), Roots = ShadowRoots.None };
}
