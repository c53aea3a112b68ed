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

    // Every live page, oldest first.
    private readonly LinkedList<NestedShadowPage> _active = new();

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
        var node = _active.First;
        while (node is not null && _hash.Count > goal)
        {
            var page = node.Value;
            if (page.RootCount > 0)
            {
                node = node.Next;
                continue;
            }
            int before = _hash.Count;
            ZapPage(page);
            _zappedAtLimit += before - _hash.Count;
            node = _active.First; // the zap may have taken any page: start again from the oldest
        }
    }

    /// <summary>A page created: the newest.</summary>
    private void Activate(NestedShadowPage page) => page.Active = _active.AddLast(page);

    private void Deactivate(NestedShadowPage page)
    {
        if (page.Active is LinkedListNode<NestedShadowPage> node)
            _active.Remove(node);
        page.Active = null;
    }

    /// <summary>The bound and the age list against the hash.</summary>
    private void RecycleProblems(List<string> problems)
    {
        if (_hash.Count > _maxPages)
            problems.Add($"{_hash.Count} shadow pages live, above the bound of {_maxPages}");
        if (_active.Count != _hash.Count)
            problems.Add($"{_active.Count} pages in the age list, {_hash.Count} hashed");
        foreach (var page in _active)
            if (!page.Live || page.Active?.Value != page || !_hash.TryGetValue((page.Gfn, page.Role.Bits), out var hashed) || hashed != page)
                problems.Add($"{page} is in the age list but freed or not hashed");
    }
}
