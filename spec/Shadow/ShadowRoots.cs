using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Shadow;

/// <summary>
/// What happens to a previous root whose translations a flush may have made stale
/// (docs/shadow-model.md, "Flush PCID p"): KVM today frees it; the keep-unsync-prev-roots proposal
/// (Lai Jiangshan, 2021; docs/glossary.md) keeps it, flagged unsync,
/// and re-syncs it when it is switched back in.
/// </summary>
public enum ShadowRootPolicy
{
    /// <summary>The keep-unsync-prev-roots proposal (Lai Jiangshan, 2021): keep the root, flag it unsync, sync it before it is used again.</summary>
    KeepAndResync,
    /// <summary>KVM's kvm_invalidate_pcid: free previous roots of a flushed PCID.</summary>
    Upstream,
}

/// <summary>
/// The pages of a root: one key for 4/5-level guests; four entries for PAE and 32-bit guests (KVM's
/// pae_root, itself not a shadow page), null where a PAE PDPTE is not present.
/// </summary>
public sealed record ShadowRoot(ImmutableArray<ShadowKey?> Pages)
{
    public bool Equals(ShadowRoot? other) => other is not null && Pages.SequenceEqual(other.Pages);
    public override int GetHashCode() => Pages.Length;
    public override string ToString() => string.Join(" | ", Pages.Select(p => p?.ToString() ?? "none"));
}

/// <summary>
/// A cached root (KVM's kvm_mmu_root_info, with the role its root page carries and the unsync flag of
/// the keep-unsync-prev-roots proposal, Lai Jiangshan, 2021).
/// </summary>
/// <param name="Pgd">The CR3 value the root was built for: PCID bits included, MOV CR3's NOFLUSH bit never.</param>
/// <param name="Role">The base role with the root level (2 for PAE and 32-bit guests).</param>
/// <param name="Root">Its pages.</param>
/// <param name="Unsync">It may reach translations a flush has removed since: sync it before use (KeepAndResync only).</param>
public sealed record ShadowRootInfo(ulong Pgd, ShadowRole Role, ShadowRoot Root, bool Unsync)
{
    public ShadowRootInfo WithUnsync(bool value) => this with { Unsync = value };

    /// <summary>The PCID the root's address space runs with: CR3 bits 11:0 when CR4.PCIDE is set, else 0.</summary>
    public int Pcid(bool pcide) => ShadowRoots.PcidOf(Pgd, pcide);

    /// <summary>
    /// KVM's is_root_usable: MOV CR3 of <paramref name="pgd"/> may switch to this root if it was built
    /// for that CR3 value (PCID included) with <paramref name="role"/> (the base role with the root level).
    /// </summary>
    public bool IsUsableFor(ulong pgd, ShadowRole role) => Pgd == pgd && Role.Equals(role);

    /// <summary>Whether <paramref name="key"/> is one of the root's pages.</summary>
    public bool Holds(ShadowKey key) => Root.Pages.Contains(key);

    public override string ToString() => $"pgd {Bits.Hex(Pgd)} L{Role.Level}{(Unsync ? " unsync" : "")}: {Root}";
}

/// <summary>
/// A vCPU's cached roots (KVM's mmu->root and mmu->prev_roots): the current root, or none, and up to
/// <see cref="MaxPrevious"/> previous roots, most recently used first, without holes.
/// </summary>
public sealed record ShadowRoots(ShadowRootInfo? Current, ImmutableList<ShadowRootInfo> Previous)
{
    /// <summary>KVM_MMU_NUM_PREV_ROOTS.</summary>
    public const int MaxPrevious = 3;

    public static ShadowRoots None { get; } = new(null, ImmutableList<ShadowRootInfo>.Empty);

    /// <summary>The current root (if any), then the previous ones in LRU order.</summary>
    public IEnumerable<ShadowRootInfo> All => Current is null ? Previous : Previous.Insert(0, Current);

    public static int PcidOf(ulong cr3, bool pcide) => pcide ? (int)(cr3 & 0xFFF) : 0;

    /// <summary>
    /// MOV CR3's switch of the cached roots (docs/shadow-model.md, "GuestMovCr3", step 2; KVM's
    /// cached_root_find_and_keep_current and cached_root_find_without_current). A usable current root
    /// stays. Else the first usable previous root becomes current and the old current root (if any) the
    /// most recently used previous one, the others keeping their order. Else (a miss) the old current
    /// root (if any) becomes the most recently used previous one, the least recently used beyond
    /// <see cref="MaxPrevious"/> is freed, and there is no current root until one is loaded.
    /// </summary>
    /// <returns>The roots after the switch, and the previous root switched back in (null unless one was).</returns>
    public (ShadowRoots Roots, ShadowRootInfo? Reused) Switch(ulong pgd, ShadowRole role)
    {
        if (Current is { } current && current.IsUsableFor(pgd, role)) return (this, null);
        int hit = Previous.FindIndex(r => r.IsUsableFor(pgd, role));
        var others = hit >= 0 ? Previous.RemoveAt(hit) : Previous;
        var demoted = Current is null ? others : others.Insert(0, Current);
        return hit >= 0
            ? (new(Previous[hit], demoted), Previous[hit])
            : (new(null, demoted.Take(MaxPrevious).ToImmutableList()), null);
    }

    /// <summary>Every root that <paramref name="which"/> selects is freed; the later previous roots move up.</summary>
    public ShadowRoots Free(Func<ShadowRootInfo, bool> which) =>
        new(Current is { } c && which(c) ? null : Current, Previous.RemoveAll(r => which(r)));

    /// <summary>Every previous root that <paramref name="which"/> selects is freed; the later ones move up.</summary>
    public ShadowRoots FreePrevious(Func<ShadowRootInfo, bool> which) => this with { Previous = Previous.RemoveAll(r => which(r)) };

    /// <summary>Every previous root that <paramref name="which"/> selects is flagged unsync.</summary>
    public ShadowRoots FlagPrevious(Func<ShadowRootInfo, bool> which) =>
        this with { Previous = Previous.Select(r => which(r) ? r.WithUnsync(true) : r).ToImmutableList() };

    public bool Equals(ShadowRoots? other) =>
        other is not null && Equals(Current, other.Current) && Previous.SequenceEqual(other.Previous);
    public override int GetHashCode() => Previous.Count;

    public override string ToString() =>
        $"current {Current?.ToString() ?? "none"}" + string.Concat(Previous.Select((r, i) => $"; prev{i} {r}"));
}
