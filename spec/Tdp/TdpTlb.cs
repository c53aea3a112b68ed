using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>One reason a step must flush: the gfns concerned and what happened to their translation.</summary>
public sealed record FlushDuty(GfnRange Gfns, string Why)
{
    public override string ToString() => $"{Gfns}: {Why}";
}

/// <summary>
/// What a step must flush (docs/tdp-model.md, "TLB flushes"): every gfn for which the hardware may
/// still hold a translation, or a link to a table, that the step took away. <see cref="Gfns"/> is the
/// set; <see cref="Duties"/> say why, one per leaf or freed table.
/// </summary>
public sealed record FlushObligation
{
    public FlushObligation(ImmutableArray<FlushDuty> duties)
    {
        Duties = duties;
        Gfns = GfnRanges.Of(duties.Select(d => d.Gfns));
    }

    public static FlushObligation None { get; } = new(ImmutableArray<FlushDuty>.Empty);

    public ImmutableArray<FlushDuty> Duties { get; }

    /// <summary>Every gfn the step's flushes must cover.</summary>
    public GfnRanges Gfns { get; }

    public bool IsEmpty => Gfns.IsEmpty;

    /// <summary>The first duty that concerns a gfn of <paramref name="gfns"/>, or null.</summary>
    public FlushDuty? DutyFor(GfnRange gfns) => Duties.FirstOrDefault(d => d.Gfns.Overlaps(gfns));

    public bool Equals(FlushObligation? other) => other is not null && Duties.SequenceEqual(other.Duties);
    public override int GetHashCode() => Gfns.GetHashCode();

    public override string ToString() => IsEmpty ? "no flush needed" : string.Join("; ", Duties);
}

/// <summary>
/// The hardware TLB's side of the TDP contract (docs/tdp-model.md, "TLB flushes"). The CPU may cache
/// any translation gfn -> (host frame, rights) the tables held, and any link to a table it walked
/// through, until a flush covers that gfn. So a step that removes a leaf, points a gfn elsewhere,
/// takes away write access, or unlinks a table must flush every gfn concerned; a huge leaf concerns
/// every gfn it mapped, a table every gfn it covered. Adding mappings or rights needs no flush (a
/// stale "not present" or "read-only" costs a spurious fault, which the fault handler fixes).
/// <para>
/// Computed from the spec's own tables before and after a step, nothing else: for each root, every
/// gfn whose translation before the step is no longer granted, at least as widely, by the tables
/// after it; and the full range of every table page that no longer exists.
/// </para>
/// </summary>
public static class TdpTlb
{
    /// <summary>The gfns a step from <paramref name="before"/> to <paramref name="after"/> must flush.</summary>
    public static FlushObligation MustFlush(TdpState before, TdpState after)
    {
        // Every duty below is a function of the table pages alone: a step that left them as they
        // were (the same immutable map) lost no translation and freed no table.
        if (ReferenceEquals(before.Pages, after.Pages)) return FlushObligation.None;
        var duties = ImmutableArray.CreateBuilder<FlushDuty>();
        bool named = before.Config.SharedBit is not null;   // with a shared bit, say which root
        // Only the table pages the step changed (or added, or removed) matter: an unchanged page's leaves are
        // in both states, so they lost nothing, and since leaves never overlap within a root, they overlap no
        // leaf that was lost either. (The same duties, in the same order, as comparing every leaf.)
        var (changedBefore, changedAfter, freed) = ChangedPages(before, after);
        foreach (bool mirror in new[] { false, true })
        {
            var now = LeavesOf(changedAfter, mirror);
            foreach (var old in LeavesOf(changedBefore, mirror))
                LostTranslations(old, now, named ? (mirror ? " in the mirror root" : " in the direct root") : "", duties);
        }
        foreach (var page in freed)
        {
            // The topmost freed table says it all: its range holds its freed children's.
            if (Parent(page, before.Config.RootLevel) is { } parent && !after.Pages.ContainsKey(parent) && before.Pages.ContainsKey(parent)) continue;
            duties.Add(new FlushDuty(TableRange(page),
                $"table page {page} was freed (the hardware may still hold the link to it for every gfn it covered)"));
        }
        return duties.Count == 0 ? FlushObligation.None : new FlushObligation(duties.ToImmutable());
    }

    /// <summary>Every gfn a table page covers: 2^(9 * level) frames from its gfn.</summary>
    public static GfnRange TableRange(PageKey page) => GfnRange.OfCount(page.Gfn, 1UL << (9 * page.Role.Level));

    /// <summary>The leaves of <paramref name="pages"/> under one root, ascending by gfn (they never overlap).</summary>
    static List<Spte.Leaf> LeavesOf(List<TablePage> pages, bool mirror) =>
        pages.Where(p => p.Key.Role.Mirror == mirror).SelectMany(p => p.Entries.Values.OfType<Spte.Leaf>()).OrderBy(l => l.Gfn).ToList();

    /// <summary>
    /// The table pages each state holds that the other does not hold as they are (the very same page), and the
    /// keys <paramref name="before"/> holds that <paramref name="after"/> does not; all in key order. One merge of
    /// the two sorted maps, not a lookup per page.
    /// </summary>
    static (List<TablePage> Before, List<TablePage> After, List<PageKey> Freed) ChangedPages(TdpState before, TdpState after)
    {
        var comparer = before.Pages.KeyComparer;
        var (was, now) = (before.Pages.GetEnumerator(), after.Pages.WithComparers(comparer).GetEnumerator());
        var (changedBefore, changedAfter, freed) = (new List<TablePage>(), new List<TablePage>(), new List<PageKey>());
        try
        {
            bool hasWas = was.MoveNext(), hasNow = now.MoveNext();
            while (hasWas || hasNow)
            {
                int order = !hasWas ? 1 : !hasNow ? -1 : comparer.Compare(was.Current.Key, now.Current.Key);
                if (order <= 0 && !(order == 0 && ReferenceEquals(was.Current.Value, now.Current.Value)))
                    changedBefore.Add(was.Current.Value);
                if (order >= 0 && !(order == 0 && ReferenceEquals(was.Current.Value, now.Current.Value)))
                    changedAfter.Add(now.Current.Value);
                if (order < 0) freed.Add(was.Current.Key);
                if (order <= 0) hasWas = was.MoveNext();
                if (order >= 0) hasNow = now.MoveNext();
            }
            return (changedBefore, changedAfter, freed);
        }
        finally { was.Dispose(); now.Dispose(); }
    }

    /// <summary>
    /// The parts of <paramref name="old"/>'s range whose translation <paramref name="now"/> does not keep:
    /// kept where a leaf after the step maps the gfn to the same host frame with the same rights or more.
    /// </summary>
    static void LostTranslations(Spte.Leaf old, List<Spte.Leaf> now, string root, ImmutableArray<FlushDuty>.Builder duties)
    {
        ulong end = old.Gfn + old.Frames;
        // The first leaf after the step that ends past old's start (leaves are disjoint, so ends ascend too).
        int lo = 0, hi = now.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) / 2;
            if (now[mid].Gfn + now[mid].Frames <= old.Gfn) lo = mid + 1; else hi = mid;
        }

        var lost = new List<GfnRange>();
        var overlapping = new List<Spte.Leaf>();
        ulong cursor = old.Gfn;
        bool gaps = false;
        for (int i = lo; i < now.Count && now[i].Gfn < end; i++)
        {
            var leaf = now[i];
            overlapping.Add(leaf);
            ulong from = Math.Max(old.Gfn, leaf.Gfn), to = Math.Min(end, leaf.Gfn + leaf.Frames);
            if (cursor < from) { lost.Add(new GfnRange(cursor, from)); gaps = true; }   // nothing maps these any more
            if (!Keeps(old, leaf)) lost.Add(new GfnRange(from, to));                    // mapped elsewhere, or with less
            cursor = to;
        }
        if (cursor < end) { lost.Add(new GfnRange(cursor, end)); gaps = true; }
        if (lost.Count == 0) return;

        string why = overlapping.Count == 0 ? $"{Describe(old)}{root} was unmapped"
            : !gaps && overlapping.All(l => SameTarget(old, l)) ? $"{Describe(old)}{root} lost write access"
            : $"{Describe(old)}{root} was replaced by {string.Join(", ", overlapping.Take(2).Select(Describe))}"
              + (overlapping.Count > 2 ? $" and {overlapping.Count - 2} more" : "") + (gaps ? ", the rest unmapped" : "");
        foreach (var range in GfnRanges.Of(lost).Ranges) duties.Add(new FlushDuty(range, why));
    }

    /// <summary>Gfns of both leaves reach the same host frames: the leaves share gfn - host frame.</summary>
    static bool SameTarget(Spte.Leaf a, Spte.Leaf b) => a.HostPfn - a.Gfn == b.HostPfn - b.Gfn;

    /// <summary>A cached copy of <paramref name="old"/> is still right for <paramref name="now"/>'s gfns (rights may have grown).</summary>
    static bool Keeps(Spte.Leaf old, Spte.Leaf now) => SameTarget(old, now) && (now.Writable || !old.Writable);

    static string Describe(Spte.Leaf leaf) => $"a {leaf.Size.Name()} leaf at gfn {Bits.Hex(leaf.Gfn)} -> pfn {Bits.Hex(leaf.HostPfn)} {(leaf.Writable ? "RWX" : "R-X")}";

    /// <summary>The table that links <paramref name="page"/>, or null for a root.</summary>
    static PageKey? Parent(PageKey page, int rootLevel)
    {
        int level = page.Role.Level + 1;
        if (level > rootLevel) return null;
        ulong covers = 1UL << (9 * level);
        return new PageKey(page.Gfn & ~(covers - 1), page.Role with { Level = level });
    }
}
