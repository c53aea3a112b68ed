using MmuSpec.Spec.Memory;

namespace MmuSpec.Spec.Tdp;

/// <summary>
/// Zapping collapsible mappings when a slot stops logging (docs/tdp-model.md, "Dirty logging turned off"). While
/// a slot logs, faults map it 4 KiB at a time; once it stops, KVM drops every table link whose range a fault could
/// now map with one huge leaf, so the next fault there maps huge (kvm_mmu_slot_apply_flags ->
/// kvm_mmu_zap_collapsible_sptes -> kvm_tdp_mmu_zap_collapsible_sptes, arch/x86/kvm/mmu/tdp_mmu.c, Linux 6.1-6.12:
/// zap_collapsible_spte_range visits non-leaf entries at 2 MiB and 1 GiB top-down, skips an entry whose gfn lies
/// outside the slot or whose kvm_mmu_max_mapping_level is below its level, and zaps the rest with
/// tdp_mmu_zap_spte_atomic under mmu_lock held for read). Linux 6.13 recovers the huge leaf in place instead
/// (kvm_tdp_mmu_recover_huge_pages, make_huge_spte); the model follows the zap, which leaves the new leaf to the
/// fault's own rule. The level rule is the fault's (<see cref="MappingLevel"/>), asked for the link's first gfn.
/// </summary>
public sealed partial record TdpState
{
    /// <summary>Every table link of every table page, both roots: (page, index, link).</summary>
    public IEnumerable<(PageKey Page, int Index, Spte.Table Link)> Links() =>
        from p in Pages.Values
        from e in p.Entries
        where e.Value is Spte.Table
        select (p.Key, e.Key, (Spte.Table)e.Value);

    /// <summary>
    /// Whether the link to <paramref name="child"/> may go because one leaf could map its whole range: its level
    /// (the child's plus one) is a huge-leaf level, its first gfn lies in [<paramref name="start"/>,
    /// <paramref name="end"/>) (the slot the zap walks), and a fault there would now map at that level or above.
    /// </summary>
    public bool IsCollapsible(PageKey child, ulong start, ulong end)
    {
        int level = child.Role.Level + 1;
        if (level > 3 || child.Gfn < start || child.Gfn >= end) return false;
        var slot = Slots.Values.FirstOrDefault(s => s.Contains(child.Gfn));
        return slot is not null && MappingLevel(slot, child.Gfn) >= level;
    }

    /// <summary>Drops a link and frees the table below it (a successful tdp_mmu_zap_spte_atomic on a non-leaf entry).</summary>
    TdpState DropLink(PageKey page, int index, Spte.Table link) => FreeSubtree(link.Child).RemoveEntry(page, index);

    /// <summary>
    /// The atomic zap over [<paramref name="start"/>, <paramref name="end"/>): every collapsible link, 1 GiB links
    /// before 2 MiB ones (a dropped 1 GiB link takes the 2 MiB links below it along).
    /// </summary>
    TdpState ZapCollapsible(ulong start, ulong end)
    {
        var state = this;
        foreach (var (page, index, link) in Links().OrderByDescending(l => l.Link.Child.Role.Level).ToList())
            if (state.Pages.ContainsKey(page) && state.IsCollapsible(link.Child, start, end))
                state = state.DropLink(page, index, link);
        return state;
    }

    /// <summary>Logging turned off on <paramref name="s"/>: the flag and the bitmap go, then the collapsible links.</summary>
    TdpState StopLogging(HostMemslot s) => With(Memslots.SetDirtyLogging(s, false)).ZapCollapsible(s.BaseGfn, s.EndGfn);

    /// <summary>
    /// One step of the collapsible zap's walk at its cursor (the walk visits entries at 1 GiB and 2 MiB, top-down,
    /// never 4 KiB ones: for_each_tdp_pte_min_level(PG_LEVEL_2M)). In this order, the first that covers the cursor:
    /// a collapsible 1 GiB link, then a collapsible 2 MiB link, is dropped; a 2 MiB link that is not, or a huge leaf,
    /// is passed. None: a hole, ended as the other walks' holes are, by the next link or leaf ahead.
    /// </summary>
    IEnumerable<(TdpState State, RangeWalk Walk)> StepCollapsible(RangeWalk walk, IReadOnlySet<ulong>? stops)
    {
        ulong at = walk.Cursor;
        var links = Links().Where(l => l.Page.Role.Mirror == walk.Mirror && l.Link.Child.Role.Level <= 2).ToList();
        foreach (int childLevel in new[] { 2, 1 })
        {
            if (links.FirstOrDefault(l => l.Link.Child.Role.Level == childLevel && Covers(l.Link.Child, at)) is not { Link: not null } hit) continue;
            bool collapsible = IsCollapsible(hit.Link.Child, walk.Start, walk.End);
            if (!collapsible && childLevel == 2) continue;        // a 1 GiB link that stays is walked into
            var state = collapsible ? DropLink(hit.Page, hit.Index, hit.Link) : this;
            yield return (state, Moved(walk with { Cursor = hit.Link.Child.Gfn + Frames(childLevel + 1) }));
            yield break;
        }
        var leaves = Leaves().Where(l => l.Page.Role.Mirror == walk.Mirror).ToList();
        if (leaves.FirstOrDefault(l => l.Leaf.Covers(at) && l.Leaf.Level > 1) is { Leaf: not null } leaf)
        {
            yield return (this, Moved(walk with { Cursor = leaf.Leaf.Gfn + leaf.Leaf.Frames }));
            yield break;
        }
        // A hole (a 4 KiB leaf covers the cursor only under a 2 MiB link, handled above). What lies ahead: the
        // leaves and the 1 GiB and 2 MiB links that begin past the cursor.
        var starts = leaves.Select(l => l.Leaf.Gfn).Concat(links.Select(l => l.Link.Child.Gfn)).Where(g => g > at && g < walk.End).ToList();
        ulong next = starts.Count == 0 ? walk.End : starts.Min();
        if (stops is not null)
        {
            yield return (this, Moved(walk with { Cursor = next }));
            foreach (ulong stop in stops.Where(g => g > at && g < next).OrderDescending())
                yield return (this, walk with { Cursor = stop });
            yield break;
        }
        var ends = new SortedSet<ulong>();
        for (int level = 1; level <= Config.RootLevel; level++)
        {
            ulong end = Math.Min((at & ~(Frames(level) - 1)) + Frames(level), walk.End);
            if (end <= next) ends.Add(end);
        }
        foreach (ulong end in ends.Reverse())
            yield return (this, Moved(walk with { Cursor = end }));
    }

    static ulong Frames(int level) => 1UL << (9 * (level - 1));

    /// <summary>Whether the table <paramref name="child"/> covers <paramref name="gfn"/>.</summary>
    static bool Covers(PageKey child, ulong gfn) => gfn >= child.Gfn && gfn - child.Gfn < Frames(child.Role.Level + 1);
}
