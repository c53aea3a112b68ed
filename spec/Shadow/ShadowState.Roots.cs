using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Shadow;

// Loading, syncing, switching and flushing the cached roots (docs/shadow-model.md, "Roots").
// Which root is current and the order of the previous ones is ShadowRoots' rule (ShadowRoots.cs).
public sealed partial record ShadowState
{
    /// <summary>
    /// The root pages the guest's paging state calls for: the root table (4/5-level), the tables the
    /// PDPTE registers point to (PAE), or the four quarters of the page directory (32-bit).
    /// </summary>
    ShadowRoot RootPagesFor(CpuState cpu)
    {
        var c = cpu.Controls;
        var role = RootRole(c);
        ulong rootGfn = cpu.RootTableAddress >> 12;
        return new ShadowRoot(c.Mode switch
        {
            PagingMode.Long4 or PagingMode.Long5 => [new ShadowKey(rootGfn, role)],
            PagingMode.Pae => cpu.Pdptes.Select(raw => new PagingEntry(raw).Present
                ? new ShadowKey((raw & Bits.Range(c.MaxPhyAddr - 1, 12)) >> 12, role)
                : null).ToImmutableArray(),
            _ => Enumerable.Range(0, 4).Select(q => (ShadowKey?)new ShadowKey(rootGfn, role.WithQuadrant(q))).ToImmutableArray(),
        });
    }

    /// <summary>The role of a root for these controls: the base role with the root level (2 for PAE and 32-bit guests).</summary>
    static ShadowRole RootRole(PagingControls c) => ShadowRole.Base(c).WithLevel(RootLevelOf(c));

    /// <summary>The level of a root's pages: the guest's root level in IA-32e paging, 2 for PAE and 32-bit guests (the pae_root's entries).</summary>
    static int RootLevelOf(PagingControls c) => c.Mode.IsLongMode() ? c.Mode.RootLevel() : 2;

    /// <summary>
    /// KVM's mmu_alloc_shadow_roots then kvm_mmu_sync_roots, for the guest's current paging state:
    /// a new current root (there must be none).
    /// </summary>
    ShadowState LoadRoot()
    {
        var cpu = GuestCpu!;
        var root = RootPagesFor(cpu);
        var state = this;
        foreach (var key in root.Pages.OfType<ShadowKey>()) state = state.GetPage(key);
        var info = new ShadowRootInfo(cpu.Cr3, RootRole(cpu.Controls), root, Unsync: false);
        return (state with { Roots = state.Roots with { Current = info } }).SyncReachable();
    }

    /// <summary>Guest operations run after a VM entry, which loads a missing root.</summary>
    ShadowState Running() => GuestCpu is not null && Roots.Current is null ? LoadRoot() : this;

    /// <summary>KVM's kvm_mmu_sync_roots: every unsync page reachable from the root's pages is synced.</summary>
    ShadowState SyncRootPages(ShadowRoot root)
    {
        var state = this;
        foreach (var key in Reachable(root.Pages.OfType<ShadowKey>()).Where(k => Pages[k].Unsync).ToList())
            state = state.SyncPage(key);
        return state;
    }

    /// <summary>Sync reachable: the current root is synced (its pages; its unsync flag, if set, clears).</summary>
    ShadowState SyncReachable() => Roots.Current is { } current
        ? SyncRootPages(current.Root) with { Roots = Roots with { Current = current.WithUnsync(false) } }
        : this;

    /// <summary>
    /// KVM's kvm_mmu_invalidate_addr over <paramref name="roots"/>: every unsync page on the shadow path
    /// of <paramref name="gva"/> in each has the entry for it synced (the pages stay unsync).
    /// </summary>
    ShadowState InvalidateAddress(ulong gva, IEnumerable<ShadowRootInfo> roots)
    {
        var state = this;
        foreach (var root in roots.ToList())
        {
            var page = RootPageFor(root.Root, gva);
            for (int level = state.RootLevel; page is not null; level--)
            {
                if (state.Pages[page].Unsync) state = state.SyncEntry(page, ShadowIndex(level, gva));
                page = state.Pages[page].Entries.GetValueOrDefault(ShadowIndex(level, gva)) is ShadowEntry.Table t ? t.Child : null;
            }
        }
        return state;
    }

    // ---- cached roots (docs/shadow-model.md, "GuestMovCr3") ----

    /// <summary>
    /// MOV CR3's root switch: the cached roots switch as <see cref="ShadowRoots.Switch"/> says (a
    /// usable cached root becomes current, the least recently used beyond three is freed on a miss);
    /// then what the pages owe: a reused root starts a new write-flooding count, a PAE root built from
    /// other PDPTEs is rebuilt, a reused root flagged unsync is synced, and a missing root is loaded.
    /// </summary>
    ShadowState SwitchRoot()
    {
        var cpu = GuestCpu!;
        var (roots, reused) = Roots.Switch(cpu.Cr3, RootRole(cpu.Controls));
        var state = this with { Roots = roots };
        // KVM's kvm_mmu_new_pgd: a root switched back in starts a new write-flooding count.
        if (reused is not null)
            foreach (var key in reused.Root.Pages.OfType<ShadowKey>())
                state = state.SetPage(state.Pages[key].WithWriteFlooding(0));
        // PAE: a root built from other PDPTEs is rebuilt (KVM's load_pdptrs frees the current root).
        if (state.Roots.Current is { } now && !now.Root.Equals(RootPagesFor(cpu)))
            state = state with { Roots = state.Roots with { Current = null } };
        // The keep-unsync-prev-roots proposal (Lai Jiangshan, 2021): a root kept through a flush is synced before it is used again.
        if (state.Roots.Current is { Unsync: true })
            state = state.SyncReachable();
        return state.Running();
    }

    /// <summary>
    /// KVM's kvm_invalidate_pcid: the current root is synced if it runs with <paramref name="pcid"/>;
    /// with PCIDE, previous roots of that PCID are freed (Upstream) or, if they reach an unsync page,
    /// flagged unsync (KeepAndResync).
    /// </summary>
    ShadowState FlushPcid(int pcid)
    {
        var state = CurrentPcid == pcid ? SyncReachable() : this;
        if (!GuestPcide) return state;     // every MOV CR3 flushes: each previous root is synced when switched in
        bool OfPcid(ShadowRootInfo r) => r.Pcid(GuestPcide) == pcid;
        return Config.RootPolicy == ShadowRootPolicy.Upstream
            ? state with { Roots = state.Roots.FreePrevious(OfPcid) }
            : state with { Roots = state.Roots.FlagPrevious(r => OfPcid(r) && state.ReachesUnsync(r)) };
    }

    /// <summary>
    /// KVM's KVM_REQ_TLB_FLUSH_GUEST (kvm_mmu_sync_roots, kvm_mmu_sync_prev_roots): the current root is
    /// synced; a previous root that reaches an unsync page is freed (Upstream: "sync prev_roots by
    /// simply freeing them") or flagged unsync (KeepAndResync).
    /// </summary>
    ShadowState FlushAllPcids()
    {
        var state = SyncReachable();
        return Config.RootPolicy == ShadowRootPolicy.Upstream
            ? state with { Roots = state.Roots.FreePrevious(state.ReachesUnsync) }
            : state with { Roots = state.Roots.FlagPrevious(state.ReachesUnsync) };
    }

    /// <summary>KVM's is_unsync_root: some page reachable from the root's pages is unsync (so it may serve a stale translation).</summary>
    public bool ReachesUnsync(ShadowRootInfo root) => Reachable(root.Root.Pages.OfType<ShadowKey>()).Any(k => Pages[k].Unsync);
}
