using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Nested;

/// <summary>
/// Unsync shadow EPT pages (docs/nested-ept.md, "Unsync shadow EPT pages"), KVM's unsync for the nested EPT MMU: an
/// L1 store into a shadowed last-level EPT table lands without a trap and leaves the shadow entries built from it
/// as they were (mmu_try_to_unsync_pages), so L2 may keep using a stale translation, as the processor may keep a
/// guest-physical mapping until it is invalidated (SDM Vol. 3C §29.4.3.1). The pages are brought back in line where
/// KVM does: the roots INVEPT names (keep-and-resync; under KVM's policy the roots are freed and the root load
/// syncs, kvm_mmu_load's kvm_mmu_sync_roots), a page linked again (kvm_mmu_get_shadow_page's kvm_sync_page and the
/// unsync children it brings), and the violation's gpa in every root of the EP4TA when one is reflected to L1
/// (kvm_inject_emulated_page_fault and nested_ept_invalidate_addr, upstream ee1fa209f5e5).
/// </summary>
internal sealed unsafe partial class NestedEptMmu
{
    // The unsync pages: indirect, level 1, their gfn shadowed at no other level.
    private readonly HashSet<NestedShadowPage> _unsync = new();

    private long _pagesUnsynced, _syncedAtInvept, _syncedAtRootLoad, _syncedAtLink, _gpasSyncedAtViolation, _noAccessDropped;

    public NestedUnsyncCounters UnsyncCounters =>
        new(_pagesUnsynced, _syncedAtInvept, _syncedAtRootLoad, _syncedAtLink, _gpasSyncedAtViolation, _noAccessDropped);

    /// <summary>
    /// mmu_try_to_unsync_pages for L1's store into a table shadowed by <paramref name="pages"/>: only when every page
    /// is a last-level one (a table shadowed at an upper level stays write-protected and the store is emulated, KVM's
    /// -EPERM); each page not yet unsync becomes so. False: the caller zaps as kvm_mmu_track_write does.
    /// </summary>
    private bool TryUnsync(List<NestedShadowPage> pages)
    {
        foreach (var page in pages)
            if (page.Role.Level != 1)
                return false;
        foreach (var page in pages)
        {
            if (page.Unsync)
                continue;
            page.Unsync = true;
            _unsync.Add(page);
            _pagesUnsynced++;
        }
        return true;
    }

    /// <summary>
    /// FNAME(sync_spte) for entry <paramref name="index"/> of an indirect last-level page holding <paramref name="spte"/>:
    /// L1's entry read again; dropped (0) when it is not present, misconfigured, not accessed with EPT A/D
    /// (FNAME(prefetch_invalid_gpte)), retargeted, outside the slots, or when the rights ANDed with the page's role give
    /// none (an execute-only leaf below read-only levels, upstream 9fb3565743d5); else the entry with the new rights,
    /// W removed while L1's leaf is clean (FNAME(protect_clean_gpte)). <paramref name="noAccess"/>: dropped for RWX=0.
    /// </summary>
    private ulong SyncedEntry(NestedShadowPage page, int index, ulong spte, out bool noAccess)
    {
        noAccess = false;
        if (!TryRead((page.Gfn << PageShift) + ((ulong)index << 3), out ulong e, out _))
            return 0;
        uint rwx = (uint)(e & 7);
        if (rwx == 0 || Misconfigured(1, e, rwx, leaf: true) is not null)
            return 0;
        bool accessedDirty = page.Role.AccessedDirty;
        if (accessedDirty && (e & Accessed) == 0)
            return 0;
        uint access = page.Role.Access & rwx;
        if (accessedDirty && (e & Dirty) == 0)
            access &= ~2u;
        if (access == 0)
        {
            noAccess = true;
            return 0;
        }
        ulong gfn = (e & _addressMask) >> PageShift;
        if (gfn >= _gfnLimit || _slots.Find(gfn) is not HostMemslot slot)
            return 0;
        ulong hostPfn = slot.HostPfnBase + (gfn - slot.BaseGfn);
        return hostPfn == (spte & NestedSpte.AddressMask) >> PageShift ? NestedSpte.Leaf(hostPfn, access) : 0;
    }

    /// <summary>One present entry brought in line with L1's; counts an RWX=0 drop.</summary>
    private void SyncEntry(NestedShadowPage page, int index)
    {
        ulong spte = page.Entry(index);
        if ((spte & NestedSpte.PermissionMask) == 0)
            return;
        page.Entry(index) = SyncedEntry(page, index, spte, out bool noAccess);
        if (noAccess)
            _noAccessDropped++;
    }

    /// <summary>kvm_sync_page: every entry of an unsync page synced; the page is in sync (write-protected) again.</summary>
    private void Sync(NestedShadowPage page)
    {
        for (int i = 0; i < NestedShadowPage.Entries; i++)
            SyncEntry(page, i);
        page.Unsync = false;
        _unsync.Remove(page);
    }

    /// <summary>
    /// mmu_sync_children: every unsync page below <paramref name="top"/> (or <paramref name="top"/> itself) synced, so a
    /// root loaded or a page linked again brings no entry older than now. Returns how many were.
    /// </summary>
    private long SyncBelow(NestedShadowPage top)
    {
        if (_unsync.Count == 0)
            return 0;
        long synced = 0;
        foreach (var page in _unsync.ToArray())
        {
            if (Reaches(top, page))
            {
                Sync(page);
                synced++;
            }
        }
        return synced;
    }

    /// <summary>Whether <paramref name="page"/> is <paramref name="top"/> or linked below it (up its parent links).</summary>
    private static bool Reaches(NestedShadowPage top, NestedShadowPage page)
    {
        if (page == top)
            return true;
        foreach (var (parent, _) in page.Parents)
            if (parent.Role.Level <= top.Role.Level && Reaches(top, parent))
                return true;
        return false;
    }

    /// <summary>A root loaded (kvm_mmu_load): its unsync pages synced (kvm_mmu_sync_roots).</summary>
    private void SyncLoadedRoot(NestedShadowPage root) => _syncedAtRootLoad += SyncBelow(root);

    /// <summary>A page found in the hash and linked again: it and the unsync pages below it synced.</summary>
    private void SyncLinked(NestedShadowPage page) => _syncedAtLink += SyncBelow(page);

    /// <summary>
    /// A page shadowing L1's table at an upper level is about to exist: the table's unsync last-level pages are synced,
    /// as the table is write-protected again (KVM zaps them in __kvm_mmu_get_shadow_page; a sync leaves the same translations).
    /// </summary>
    private void SyncBeforeUpperLevel(ulong gfn)
    {
        if (_unsync.Count == 0 || !_tracked.TryGetValue(gfn, out var pages))
            return;
        foreach (var page in pages)
            if (page.Unsync)
            {
                Sync(page);
                _syncedAtLink++;
            }
    }

    /// <summary>INVEPT under keep-and-resync: the roots it names stay, their unsync pages synced.</summary>
    private void SyncKeptRoot(NestedShadowPage root) => _syncedAtInvept += SyncBelow(root);

    /// <summary>
    /// A violation at <paramref name="gpa"/> reflected to L1: the gpa's entry synced in the current root and in every
    /// cached root of the same EP4TA (the processor's guest-physical mappings are tagged by EP4TA, SDM Vol. 3C §29.4.3.1),
    /// so L2 sees L1's fixed entry without an INVEPT (kvm_inject_emulated_page_fault, nested_ept_invalidate_addr).
    /// </summary>
    private void SyncGpaAfterViolation(ulong gpa)
    {
        if (_unsync.Count == 0)
            return;
        ulong ep4ta = _eptp & _addressMask;
        if (_root is NestedShadowPage root)
            SyncGpa(root, gpa);
        foreach (var (eptp, previous) in _previous)
            if ((eptp & _addressMask) == ep4ta)
                SyncGpa(previous, gpa);
    }

    private void SyncGpa(NestedShadowPage root, ulong gpa)
    {
        NestedShadowPage? page = root;
        for (int level = root.Role.Level; level > 1 && page is not null; level--)
            page = page.Children![Index(level, gpa)];
        if (page is { Unsync: true })
        {
            SyncEntry(page, Index(1, gpa));
            _gpasSyncedAtViolation++;
        }
    }

    /// <summary>The unsync bookkeeping against the pages: which may be unsync, and every synced last-level entry what a sync would make it.</summary>
    private void UnsyncProblems(List<string> problems)
    {
        foreach (var page in _unsync)
            if (!page.Unsync || !page.Live || page.Role.Level != 1 || page.Role.Direct)
                problems.Add($"{page} is listed unsync but is {(page.Unsync ? "" : "in sync, ")}{(page.Live ? "" : "freed, ")}level {page.Role.Level}{(page.Role.Direct ? " direct" : "")}");
        foreach (var page in _hash.Values)
        {
            if (page.Unsync && !_unsync.Contains(page))
                problems.Add($"{page} is unsync but not listed");
            if (page.Unsync && _tracked.TryGetValue(page.Gfn, out var same) && same.Any(p => p.Role.Level > 1))
                problems.Add($"{page} is unsync while its table is shadowed at an upper level");
            for (int i = 0; i < NestedShadowPage.Entries; i++)
            {
                ulong spte = page.Entry(i);
                // make_spte's warning (upstream 9fb3565743d5): no entry without rights holds anything.
                if (spte != 0 && (spte & NestedSpte.PermissionMask) == 0)
                    problems.Add($"{page} entry {i} is 0x{spte:X}: no rights (RWX=0) but not empty");
                // A page in sync follows L1's EPT: an entry may grant less than a sync would (another path's walk set D since), never more.
                else if (spte != 0 && page.Role.Level == 1 && !page.Role.Direct && !page.Unsync
                    && SyncedEntry(page, i, spte, out _) is var synced
                    && (synced == 0 || (spte & ~NestedSpte.PermissionMask) != (synced & ~NestedSpte.PermissionMask) || (spte & ~synced & NestedSpte.PermissionMask) != 0))
                    problems.Add($"{page} is in sync but entry {i} is 0x{spte:X} where L1's EPT gives 0x{synced:X}");
            }
        }
    }
}
