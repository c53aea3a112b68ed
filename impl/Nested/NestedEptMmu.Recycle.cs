using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Nested;

/// <summary>
/// The bound on shadow EPT pages (docs/nested-ept.md, "Write flooding and recycling"), KVM's n_max_mmu_pages: 20 pages
/// per 1000 of the memslots' pages and at least 64 (kvm_mmu_calculate_default_mmu_pages, recomputed when a slot comes or
/// goes) unless set (KVM_SET_NR_MMU_PAGES). Before a fault builds pages, fewer than 5 free makes room for 25 by
/// zapping the oldest pages no cached root holds (make_mmu_pages_available, kvm_mmu_zap_oldest_mmu_pages); a lower
/// bound zaps down to it at once (kvm_mmu_change_mmu_pages). Pages are aged by creation (active_mmu_pages: KVM does
/// not move a page when it is used again).
/// </summary>
internal sealed unsafe partial class NestedEptMmu
{
    // KVM_MIN_ALLOC_MMU_PAGES, KVM_MIN_FREE_MMU_PAGES, KVM_REFILL_PAGES, KVM_PERMILLE_MMU_PAGES.
    private const int MinMaxPages = 64, MinFreePages = 5, RefillPages = 25, PermilleOfSlots = 20;

    // Every live page, linked through the pages from the oldest to the newest.
    private NestedShadowPage? _oldest, _newest;
    private int _activeCount;

    private int _maxPages = MinMaxPages;
    private bool _maxRequested;
    private long _zappedAtLimit;

    public int MaxShadowPages => _maxPages;

    public NestedRecycleCounters RecycleCounters =>
        new(_hash.Count, _maxPages, _zappedForFlooding, _orphansZapped, _zappedAtLimit, _pagesZapped);

    /// <summary>KVM_SET_NR_MMU_PAGES: the bound from now on, fewer than 64 refused; pages above it zapped, oldest first.</summary>
    public NestedOutcome SetMaxShadowPages(int pages)
    {
        ThrowIfDisposed();
        if (pages < MinMaxPages)
            return Reject($"{pages} shadow pages is below KVM's minimum of {MinMaxPages}");
        _maxRequested = true;
        ChangeMaxPages(pages);
        return NestedOutcome.Ok;
    }

    /// <summary>A slot came or went: the default bound follows the memslots' size (kvm_arch_commit_memory_region), unless one was set.</summary>
    private void SlotsChanged()
    {
        if (_maxRequested)
            return;
        ulong pages = 0;
        foreach (var slot in _slots.Infos())
            pages += slot.Pages;
        ChangeMaxPages((int)Math.Clamp(pages * PermilleOfSlots / 1000, MinMaxPages, int.MaxValue));
    }

    /// <summary>kvm_mmu_change_mmu_pages: above the goal, the oldest pages are zapped; where roots hold too many, the bound is what is left.</summary>
    private void ChangeMaxPages(int goal)
    {
        if (_hash.Count > goal)
        {
            ZapOldest(_hash.Count - goal);
            goal = Math.Max(goal, _hash.Count);
        }
        _maxPages = goal;
    }

    /// <summary>make_mmu_pages_available, before a fault or a root load builds pages: fewer than 5 free, the oldest zapped until 25 are.</summary>
    private void MakePagesAvailable()
    {
        int available = _maxPages - _hash.Count;
        if (available >= MinFreePages)
            return;
        ZapOldest(RefillPages - available);
    }

    /// <summary>
    /// kvm_mmu_zap_oldest_mmu_pages: from the oldest, every page no cached root holds is zapped (with what goes with it:
    /// children left parentless, unsync pages below) until <paramref name="count"/> pages are gone or only roots are left.
    /// </summary>
    private void ZapOldest(int count)
    {
        int goal = Math.Max(0, _hash.Count - count);
        var page = _oldest;
        while (page is not null && _hash.Count > goal)
        {
            if (page.RootCount > 0)
            {
                page = page.Newer;
                continue;
            }
            int before = _hash.Count;
            ZapPage(page);
            _zappedAtLimit += before - _hash.Count;
            page = _oldest; // the zap may have taken any page: start again from the oldest
        }
    }

    /// <summary>A page created: the newest.</summary>
    private void Activate(NestedShadowPage page)
    {
        page.Older = _newest;
        page.Newer = null;
        if (_newest is not null)
            _newest.Newer = page;
        else
            _oldest = page;
        _newest = page;
        _activeCount++;
    }

    /// <summary>A page zapped: out of the age list.</summary>
    private void Deactivate(NestedShadowPage page)
    {
        if (page.Older is not null)
            page.Older.Newer = page.Newer;
        else
            _oldest = page.Newer;
        if (page.Newer is not null)
            page.Newer.Older = page.Older;
        else
            _newest = page.Older;
        page.Older = page.Newer = null;
        _activeCount--;
    }

    /// <summary>Every page freed at once (zap all): the age list is empty.</summary>
    private void ClearAgeList()
    {
        _oldest = _newest = null;
        _activeCount = 0;
    }

    /// <summary>The bound and the age list against the hash.</summary>
    private void RecycleProblems(List<string> problems)
    {
        if (_hash.Count > _maxPages)
            problems.Add($"{_hash.Count} shadow pages live, above the bound of {_maxPages}");
        int listed = 0;
        for (var page = _oldest; page is not null && listed <= _hash.Count; page = page.Newer, listed++)
        {
            if (!page.Live || !_hash.TryGetValue((page.Gfn, page.Role.Bits), out var hashed) || hashed != page)
                problems.Add($"{page} is in the age list but freed or not hashed");
            if (page.Newer is null ? _newest != page : page.Newer.Older != page)
                problems.Add($"{page} is not linked back by the page after it in the age list");
        }
        if (listed != _hash.Count || _activeCount != _hash.Count)
            problems.Add($"{listed} pages in the age list ({_activeCount} counted), {_hash.Count} hashed");
    }
}
