using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

/// <summary>The state after a shadow-VM operation and what the operation returned.</summary>
public sealed record ShadowStepped(ShadowState State, ShadowResult Result);

/// <summary>
/// The MMU-model layer for shadow paging, written to be obvious rather than fast: shadow pages in an
/// immutable map keyed by (gfn, role), every entry's gfn stored explicitly, and everything KVM keeps
/// incrementally (reverse maps, parent links, unsync-children bitmaps, the pages of a gfn) recomputed
/// by a plain scan when a rule needs it. <see cref="Step"/> is a pure function; the rules are those
/// of docs/shadow-model.md, in the order that document gives them.
/// </summary>
public sealed record ShadowState(
    ShadowConfig Config,
    ImmutableSortedDictionary<int, HostMemslot> Slots,
    ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>> DirtyBitmaps,
    ImmutableSortedDictionary<ulong, ulong> HostMemory,
    CpuState? GuestCpu,
    bool GuestPcide,
    ImmutableSortedDictionary<ShadowKey, ShadowPage> Pages,
    ShadowRoots Roots)
{
    const int MaxSlotId = 31;

    /// <summary>A new VM: no memslots, paging off, no shadow pages.</summary>
    public static ShadowState Create(ShadowConfig config) => new(config,
        ImmutableSortedDictionary<int, HostMemslot>.Empty,
        ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>>.Empty,
        ImmutableSortedDictionary<ulong, ulong>.Empty, GuestCpu: null, GuestPcide: false,
        ImmutableSortedDictionary<ShadowKey, ShadowPage>.Empty, ShadowRoots.None);

    /// <summary>The current root's pages, or null when there is no current root.</summary>
    public ShadowRoot? Root => Roots.Current?.Root;

    /// <summary>The PCID the guest runs with: CR3 bits 11:0 when CR4.PCIDE is set, else 0.</summary>
    public int CurrentPcid => GuestCpu is { } cpu ? ShadowRoots.PcidOf(cpu.Cr3, GuestPcide) : 0;

    public ShadowStepped Step(ShadowOp op) => op switch
    {
        ShadowOp.CreateSlot c => CreateSlot(c),
        ShadowOp.DeleteSlot d => WithSlot(d.Id, s => Done(ZapAllPages() with
        {
            Slots = Slots.Remove(s.Id),
            DirtyBitmaps = DirtyBitmaps.Remove(s.Id),
            HostMemory = SlotMemory.Discard(HostMemory, s),
        })),
        ShadowOp.MoveSlot m => WithSlot(m.Id, s =>
            SlotMemory.RangeProblem(Slots, m.NewBaseGfn, s.Pages, Config.GfnLimit, ignoreId: s.Id) is { } problem
                ? Reject(problem)
                : Done(ZapAllPages() with { Slots = Slots.SetItem(s.Id, s.WithBaseGfn(m.NewBaseGfn)) })),
        ShadowOp.SetDirtyLogging d => WithSlot(d.Id, s => Done(SetDirtyLogging(s, d.On))),
        ShadowOp.GetDirtyLog g => WithSlot(g.Id, GetDirtyLog),
        ShadowOp.GuestStore g => GuestStore(g),
        ShadowOp.GuestSetPaging p => GuestSetPaging(p),
        ShadowOp.GuestMovCr3 m => GuestMovCr3(m.Cr3),
        ShadowOp.GuestAccess a => GuestAccess(a.Access),
        ShadowOp.Invlpg i => Invlpg(i.Gva),
        ShadowOp.Invpcid i => Invpcid(i),
        ShadowOp.FlushTlb => GuestCpu is null ? Reject("paging is off") : Done(Running().FlushAllPcids()),
        ShadowOp.ZapRange z => z.StartGfn < z.EndGfn && z.EndGfn <= Config.GfnLimit
            ? Done(RemoveLeaves(l => l.Gfn >= z.StartGfn && l.Gfn < z.EndGfn))
            : Reject($"zap range [{Bits.Hex(z.StartGfn)}, {Bits.Hex(z.EndGfn)}) is empty or beyond the guest-physical space"),
        ShadowOp.ZapAll => Done(ZapAllPages()),
        _ => throw new ArgumentException($"unknown operation {op}", nameof(op)),
    };

    // ---- memslots and dirty logging (as the TDP model, with every leaf 4 KiB) ----

    ShadowStepped CreateSlot(ShadowOp.CreateSlot c)
    {
        if (c.Id is < 0 or > MaxSlotId) return Reject($"slot id {c.Id} is not in 0..{MaxSlotId}");
        if (Slots.ContainsKey(c.Id)) return Reject($"slot {c.Id} already exists");
        if (SlotMemory.RangeProblem(Slots, c.BaseGfn, c.Pages, Config.GfnLimit, ignoreId: null) is { } problem) return Reject(problem);
        if (SlotMemory.HostRangeProblem(Slots, c.HostPfnBase, c.Pages, ShadowConfig.HostPfnLimit, "shadow entries") is { } hostProblem)
            return Reject(hostProblem);
        var slot = new HostMemslot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, PageSize.Size4K, c.ReadOnly, DirtyLogging: false);
        return Done(this with { Slots = Slots.Add(c.Id, slot) });
    }

    ShadowState SetDirtyLogging(HostMemslot s, bool on)
    {
        if (!on)
            return this with { Slots = Slots.SetItem(s.Id, s.WithDirtyLogging(false)), DirtyBitmaps = DirtyBitmaps.Remove(s.Id) };
        if (s.DirtyLogging) return this;
        // Every leaf of the slot loses W, so the next write to each page faults and is logged.
        return UpdateLeaves(l => l.Writable && s.Contains(l.Gfn), l => l.WithWritable(false)) with
        {
            Slots = Slots.SetItem(s.Id, s.WithDirtyLogging(true)),
            DirtyBitmaps = DirtyBitmaps.SetItem(s.Id, ImmutableSortedSet<ulong>.Empty),
        };
    }

    ShadowStepped GetDirtyLog(HostMemslot s)
    {
        if (!s.DirtyLogging) return Reject($"slot {s.Id} does not log dirty pages");
        var gfns = DirtyBitmaps[s.Id].Select(offset => s.BaseGfn + offset).ToImmutableArray();
        var state = this with { DirtyBitmaps = DirtyBitmaps.SetItem(s.Id, ImmutableSortedSet<ulong>.Empty) };
        foreach (ulong gfn in gfns) state = state.WriteProtect(gfn);
        return new ShadowStepped(state, new ShadowResult.DirtyLog(gfns));
    }

    ShadowState MarkDirty(HostMemslot slot, ulong gfn) =>
        slot.DirtyLogging ? this with { DirtyBitmaps = DirtyBitmaps.SetItem(slot.Id, DirtyBitmaps[slot.Id].Add(gfn - slot.BaseGfn)) } : this;

    /// <summary>Guest-physical memory as the guest sees it now (memslots over host memory).</summary>
    public GuestMemory GuestMemoryView() => SlotMemory.View(Slots, HostMemory);

    /// <summary>The <paramref name="size"/>-byte guest value at <paramref name="gpa"/>; 0 outside every slot.</summary>
    public ulong ReadGuest(ulong gpa, int size)
    {
        if (SlotMemory.SlotOf(Slots, gpa >> 12) is not { } slot) return 0;
        ulong hpa = (slot.HostPfn(gpa >> 12) << 12) | (gpa & 0xFFF);
        ulong word = HostMemory.GetValueOrDefault(hpa & ~7UL) >> (int)(hpa & 7) * 8;
        return size == 8 ? word : word & 0xFFFF_FFFF;
    }

    ShadowState StoreGuest(HostMemslot slot, ulong gpa, ulong value, int size) =>
        this with { HostMemory = SlotMemory.Store(HostMemory, (slot.HostPfn(gpa >> 12) << 12) | (gpa & 0xFFF), value, size) };

    // ---- definitions (docs/shadow-model.md, "Definitions used by the rules") ----

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

    ShadowState ZapAllPages() => this with { Pages = Pages.Clear(), Roots = ShadowRoots.None };

    // ---- cached roots (docs/shadow-model.md, "GuestMovCr3") ----

    /// <summary>
    /// MOV CR3's root switch (KVM's cached_root_find_and_keep_current and
    /// cached_root_find_without_current): a usable cached root becomes current and the old one the
    /// most recent previous root; on a miss the least recently used root beyond three is freed and a
    /// new root is loaded. A reused root flagged unsync is synced first.
    /// </summary>
    ShadowState SwitchRoot()
    {
        var cpu = GuestCpu!;
        var role = RootRole(cpu.Controls);
        bool Usable(ShadowRootInfo r) => r.Pgd == cpu.Cr3 && r.Role.Equals(role);

        var state = this;
        var (current, previous) = (Roots.Current, Roots.Previous);
        if (current is null || !Usable(current))
        {
            int hit = previous.FindIndex(r => Usable(r));
            var others = hit >= 0 ? previous.RemoveAt(hit) : previous;
            var demoted = current is null ? others : others.Insert(0, current);
            if (hit >= 0)
            {
                var reused = previous[hit];
                state = state with { Roots = new(reused, demoted) };
                // KVM's kvm_mmu_new_pgd: a root switched back in starts a new write-flooding count.
                foreach (var key in reused.Root.Pages.OfType<ShadowKey>())
                    state = state.SetPage(state.Pages[key].WithWriteFlooding(0));
            }
            else
                state = state with { Roots = new(null, demoted.Take(ShadowRoots.MaxPrevious).ToImmutableList()) };
        }
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

    // ---- the shadow tables' geometry ----

    static int ShadowIndex(int level, ulong gva) => (int)((gva >> (12 + 9 * (level - 1))) & 511);

    int RootLevel => RootLevelOf(GuestCpu!.Controls);

    /// <summary>The page of <paramref name="root"/> that translates <paramref name="gva"/> (PAE and 32-bit: by gva bits 31:30).</summary>
    static ShadowKey? RootPageFor(ShadowRoot? root, ulong gva) =>
        root is null ? null : root.Pages.Length == 1 ? root.Pages[0] : root.Pages[(int)((gva >> 30) & 3)];

    /// <summary>The current root's page that translates <paramref name="gva"/>.</summary>
    ShadowKey? RootPageFor(ulong gva) => RootPageFor(Root, gva);

    /// <summary>The first frame entry <paramref name="index"/> of direct page <paramref name="key"/> maps (the computed-direct-gfn patch, Lai Jiangshan, 2010, with its quadrant correction).</summary>
    public static ulong DirectGfn(ShadowKey key, int index) =>
        key.Gfn + ((ulong)key.Role.Quadrant << 9) + ((ulong)index << (9 * (key.Role.Level - 1)));

    // ---- guest operations ----

    ShadowStepped GuestStore(ShadowOp.GuestStore g)
    {
        if (g.Size is not (4 or 8) || g.Gpa % (ulong)g.Size != 0) return Reject($"a guest store is 4 or 8 bytes, aligned ({g.Size} at {Bits.Hex(g.Gpa)})");
        if (g.Gpa >> Config.MaxPhyAddr != 0) return Reject($"gpa {Bits.Hex(g.Gpa)} is beyond MAXPHYADDR {Config.MaxPhyAddr}");
        var state = Running();
        ulong gfn = g.Gpa >> 12;
        if (SlotMemory.SlotOf(Slots, gfn) is not { ReadOnly: false } slot) return new ShadowStepped(state, new ShadowResult.MmioExit(g.Gpa));

        bool emulated = false;
        if (state.IsWriteProtected(gfn))
        {
            (bool unsynced, state) = state.TryUnsync(gfn);
            emulated = !unsynced;
        }
        state = state.StoreGuest(slot, g.Gpa, g.Value, g.Size).MarkDirty(slot, gfn);
        return Done(emulated ? state.TrackedWrite(g.Gpa, g.Size) : state);
    }

    /// <summary>KVM's kvm_mmu_track_write after an emulated store to a shadowed guest table.</summary>
    ShadowState TrackedWrite(ulong gpa, int size)
    {
        int offset = (int)(gpa & 0xFFF);
        var state = this;
        foreach (var key in IndirectPagesOf(gpa >> 12).Select(p => p.Key).ToList())
        {
            if (!state.Pages.TryGetValue(key, out var page)) continue;     // zapped earlier in this loop
            int entryBytes = key.Role.Has4ByteGpte ? 4 : 8;
            bool misaligned = ((offset ^ (offset + size - 1)) & ~(entryBytes - 1)) != 0;
            bool flooded = false;
            if (!misaligned && key.Role.Level > 1)
            {
                page = page.WithWriteFlooding(page.WriteFlooding + 1);
                state = state.SetPage(page);
                flooded = page.WriteFlooding >= 3;
            }
            if (misaligned || flooded)
            {
                state = state.ZapPage(key);
                continue;
            }
            foreach (int index in WrittenIndexes(key.Role, offset))
                if (state.Pages[key].Entries.ContainsKey(index)) state = state.RemoveEntry(key, index);
        }
        return state;
    }

    /// <summary>
    /// The shadow entries a store at page offset <paramref name="offset"/> rewrites (KVM's
    /// get_written_sptes): one per 8-byte guest entry; with 4-byte entries only in the page whose
    /// quadrant holds the entry, and two at level 2 (a 4 MiB PDE is two 2 MiB shadow entries).
    /// </summary>
    public static IEnumerable<int> WrittenIndexes(ShadowRole role, int offset)
    {
        if (!role.Has4ByteGpte) return [offset / 8];
        int g = offset / 4;
        return role.Level == 1
            ? (g >> 9 == role.Quadrant ? [g & 511] : [])
            : (g >> 8 == role.Quadrant ? [2 * (g & 255), 2 * (g & 255) + 1] : []);
    }

    ShadowStepped GuestSetPaging(ShadowOp.GuestSetPaging p)
    {
        var c = p.Controls;
        if (c.MaxPhyAddr != Config.MaxPhyAddr) return Reject($"MAXPHYADDR is {Config.MaxPhyAddr} for this VM, not {c.MaxPhyAddr}");
        if (c.Cr4Pke) return Reject("KVM offers protection keys only with TDP: CR4.PKE cannot be set under shadow paging");
        if (p.Pcide && !c.Mode.IsLongMode()) return Reject($"CR4.PCIDE needs IA-32e paging, not {c.Mode.Name()} paging");
        if (!c.Mode.IsLongMode() && p.Cr3 > uint.MaxValue) return Reject($"CR3 {Bits.Hex(p.Cr3)} is wider than 32 bits in {c.Mode.Name()} paging");
        CpuStateOrGp loaded;
        try { loaded = CpuState.LoadCr3(c, p.Cr3, GuestMemoryView()); }
        catch (ArgumentException e) { return Reject(e.Message); }
        if (loaded.State is not { } cpu) return GeneralProtection(loaded.Fault!.Value);

        var state = this;
        // The role has no bit for the mode family or CR4.PSE, but they change how tables are read.
        if (GuestCpu is { } old && (old.Controls.Mode != c.Mode || old.Controls.Cr4Pse != c.Cr4Pse))
            state = state.ZapAllPages();
        // KVM's kvm_mmu_reset_context: every cached root goes; the pages stay.
        return Done((state with { GuestCpu = cpu, GuestPcide = p.Pcide, Roots = ShadowRoots.None }).LoadRoot());
    }

    /// <summary>MOV to CR3: load CR3, switch roots, and flush the new PCID unless NOFLUSH (KVM's kvm_set_cr3).</summary>
    ShadowStepped GuestMovCr3(ulong operand)
    {
        if (GuestCpu is not { Controls: var c }) return Reject("paging is off: MOV CR3 is modelled only with paging on");
        bool noFlush = GuestPcide && (operand & ShadowOp.GuestMovCr3.NoFlush) != 0;
        ulong cr3 = GuestPcide ? operand & ~ShadowOp.GuestMovCr3.NoFlush : operand;
        if (!c.Mode.IsLongMode() && cr3 > uint.MaxValue) return Reject($"CR3 {Bits.Hex(cr3)} is wider than 32 bits in {c.Mode.Name()} paging");
        var loaded = CpuState.LoadCr3(c, cr3, GuestMemoryView());
        if (loaded.State is not { } cpu) return GeneralProtection(loaded.Fault!.Value);

        var state = (this with { GuestCpu = cpu }).SwitchRoot();
        return Done(noFlush ? state : state.FlushPcid(state.CurrentPcid));
    }

    ShadowStepped Invlpg(ulong gva)
    {
        if (GuestCpu is null) return Reject("paging is off");
        var mode = GuestCpu.Controls.Mode;
        if (!mode.IsLongMode() && gva > uint.MaxValue) return Reject($"linear addresses are 32 bits in {mode.Name()} paging");
        var state = Running();
        if (mode.IsLongMode() && !PageWalk.IsCanonical(mode, gva)) return Done(state);
        // INVLPG also removes global translations of every PCID: KVM does not know which entries are global, so every root.
        return Done(state.InvalidateAddress(gva, state.Roots.All));
    }

    /// <summary>KVM's kvm_handle_invpcid (docs/shadow-model.md, "Invpcid").</summary>
    ShadowStepped Invpcid(ShadowOp.Invpcid op)
    {
        if (GuestCpu is null) return Reject("paging is off");
        var mode = GuestCpu.Controls.Mode;
        if (!mode.IsLongMode() && op.Gva > uint.MaxValue) return Reject($"linear addresses are 32 bits in {mode.Name()} paging");
        if (op.Type > ShadowOp.Invpcid.AllNonGlobal) return GeneralProtection(GpReason.InvpcidType);
        bool oneContext = op.Type is ShadowOp.Invpcid.IndividualAddress or ShadowOp.Invpcid.SingleContext;
        if (op.Pcid > 0xFFF || (oneContext && !GuestPcide && op.Pcid != 0)) return GeneralProtection(GpReason.InvpcidPcid);
        if (op.Type == ShadowOp.Invpcid.IndividualAddress && mode.IsLongMode() && !PageWalk.IsCanonical(mode, op.Gva))
            return GeneralProtection(GpReason.NonCanonical);

        var state = Running();
        int pcid = (int)op.Pcid;
        return Done(op.Type switch
        {
            // KVM's kvm_mmu_invpcid_gva: the roots of that PCID, current or previous.
            ShadowOp.Invpcid.IndividualAddress => state.InvalidateAddress(op.Gva, state.Roots.All.Where(r => r.Pcid(GuestPcide) == pcid)),
            ShadowOp.Invpcid.SingleContext => state.FlushPcid(pcid),
            // KVM marks no entry global, so "all but globals" does what "all" does.
            _ => state.FlushAllPcids(),
        });
    }

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

    ShadowStepped GuestAccess(Access access)
    {
        if (GuestCpu is null) return Reject("paging is off: the shadow MMU serves a guest with paging on");
        var mode = GuestCpu.Controls.Mode;
        if (!mode.IsLongMode() && access.Gva > uint.MaxValue) return Reject($"linear addresses are 32 bits in {mode.Name()} paging");
        var state = Running();

        // 1. A hit: the hardware walked the shadow tables.
        if (state.Hit(access) is { } hit) return new ShadowStepped(state, hit);

        // 2. The guest's walk, with its A/D updates written back.
        var walk = PageWalk.Explain(state.GuestCpu!, state.GuestMemoryView(), access);
        state = state.WriteBackAccessedDirty(walk.Updates, mode.EntryBytes());
        if (walk.Result is not WalkResult.Translated t)
        {
            // SDM §4.10.4.1: a page fault invalidates the TLB entries for the faulting address.
            // Model: in every root of the current PCID (KVM: the current root only).
            if (walk.Result is WalkResult.PageFault)
            {
                int pcid = state.CurrentPcid;
                state = state.InvalidateAddress(access.Gva, state.Roots.All.Where(r => r.Pcid(GuestPcide) == pcid));
            }
            return new ShadowStepped(state, new ShadowResult.GuestFault(walk.Result));
        }

        // 3. No memslot, or a write to a read-only one.
        bool write = access.Type == AccessType.Write;
        if (SlotMemory.SlotOf(Slots, t.Gpa >> 12) is not { } slot || (write && slot.ReadOnly))
            return new ShadowStepped(state, new ShadowResult.MmioExit(t.Gpa));

        // 4. The fill.
        return state.Fill(access, walk, t, slot);
    }

    ShadowResult.Translated? Hit(Access access)
    {
        var c = GuestCpu!.Controls;
        if (c.Mode.IsLongMode() && !PageWalk.IsCanonical(c.Mode, access.Gva)) return null;
        var page = RootPageFor(access.Gva);
        for (int level = RootLevel; level > 1 && page is not null; level--)
            page = Pages[page].Entries.GetValueOrDefault(ShadowIndex(level, access.Gva)) is ShadowEntry.Table t ? t.Child : null;
        if (page is null || Pages[page].Entries.GetValueOrDefault(ShadowIndex(1, access.Gva)) is not ShadowEntry.Leaf leaf) return null;
        if (!AccessRights.Check(c, access, leaf.Rights).Allowed) return null;
        if (access.Type == AccessType.Write && !leaf.Writable) return null;
        ulong offset = access.Gva & 0xFFF;
        return new ShadowResult.Translated((leaf.Gfn << 12) | offset, (leaf.HostPfn << 12) | offset, Faulted: false);
    }

    /// <summary>The walk's A/D updates land in guest memory; dropped in a read-only slot; a logging slot marks the table dirty.</summary>
    ShadowState WriteBackAccessedDirty(IEnumerable<EntryUpdate> updates, int entryBytes)
    {
        var state = this;
        foreach (var u in updates)
            if (SlotMemory.SlotOf(Slots, u.Gpa >> 12) is { ReadOnly: false } slot)
                state = state.StoreGuest(slot, u.Gpa, u.After, entryBytes).MarkDirty(slot, u.Gpa >> 12);
        return state;
    }

    ShadowStepped Fill(Access access, WalkExplanation walk, WalkResult.Translated t, HostMemslot slot)
    {
        var c = GuestCpu!.Controls;
        ulong gva = access.Gva;
        int guestLeafLevel = walk.Steps[^1].Level;
        var state = this;
        var page = state.RootPageFor(gva)!;
        // The guest leaf as the walk left it (with the A/D bits it wrote, unless its slot is read-only).
        var guestLeaf = new PagingEntry(state.ReadGuest(walk.Steps[^1].EntryGpa!.Value, c.Mode.EntryBytes()));

        for (int level = RootLevel; level >= 2; level--)
        {
            // The guest walked through this table: it is still a table, whatever writes it had.
            if (level >= guestLeafLevel) state = state.SetPage(state.Pages[page].WithWriteFlooding(0));
            int index = ShadowIndex(level, gva);
            var child = ChildKey(page, level, index, walk, t, guestLeaf, c);
            if (state.Pages[page].Entries.GetValueOrDefault(index) is ShadowEntry.Table link)
            {
                // Follow it, except where a large guest page is split: a direct child built for other
                // rights (e.g. before the guest leaf was dirty) is replaced (KVM's validate_direct_spte).
                if (level != guestLeafLevel || link.Child.Equals(child))
                {
                    page = link.Child;
                    continue;
                }
                state = state.RemoveEntry(page, index);
            }
            state = state.GetPage(child).SetEntry(page, index, new ShadowEntry.Table(child));
            page = child;
        }

        ulong gfn = t.Gpa >> 12;
        bool write = access.Type == AccessType.Write;
        bool writable = !slot.ReadOnly && guestLeaf.IsDirty && (!slot.DirtyLogging || write);
        if (writable && write) (writable, state) = state.TryUnsync(gfn);
        else if (writable) writable = !state.IsWriteProtected(gfn);

        var leaf = new ShadowEntry.Leaf(gfn, slot.HostPfn(gfn), t.Rights, writable);
        state = state.SetEntry(page, ShadowIndex(1, gva), leaf);
        if (write) state = state.MarkDirty(slot, gfn);
        return new ShadowStepped(state, new ShadowResult.Translated(t.Gpa, (leaf.HostPfn << 12) | (t.Gpa & 0xFFF), Faulted: true));
    }

    /// <summary>The key of the page a fill links below entry <paramref name="index"/> of <paramref name="parent"/> at <paramref name="level"/>.</summary>
    static ShadowKey ChildKey(ShadowKey parent, int level, int index, WalkExplanation walk, WalkResult.Translated t, PagingEntry guestLeaf, PagingControls c)
    {
        int guestLeafLevel = walk.Steps[^1].Level;
        var role = parent.Role.WithLevel(level - 1);
        int quadrant = role.Has4ByteGpte && level - 1 == 1 ? index & 1 : 0;
        if (level > guestLeafLevel)
        {
            // The guest has a table below: shadow it, with the rights of the path down to it.
            var step = walk.Steps.Single(s => s.Level == level && s.EntryGpa is not null);
            ulong tableGfn = PagingLevels.FrameAddress(c, level, step.Entry, mapsPage: false) >> 12;
            return new ShadowKey(tableGfn, role with { Direct = false, Access = step.RightsSoFar.ToAcc(), Quadrant = quadrant });
        }
        if (level == guestLeafLevel)
        {
            // The guest maps a large page here: split it with direct pages carrying its first gfn. A
            // clean large page gives no write access (KVM's protect_clean_gpte): the first write must
            // fault so that the walk sets D, and a dirty one must not share the clean one's pages.
            ulong frames = t.Size.Bytes() >> 12;
            var access = t.Rights.ToAcc() & (guestLeaf.IsDirty ? Acc.All : ~Acc.Write);
            return new ShadowKey((t.Gpa >> 12) & ~(frames - 1), role with { Direct = true, Access = access, Quadrant = quadrant });
        }
        return new ShadowKey(DirectGfn(parent, index), role with { Quadrant = 0 });
    }

    // ---- entries ----

    ShadowState SetPage(ShadowPage page) => this with { Pages = Pages.SetItem(page.Key, page) };

    ShadowState SetEntry(ShadowKey page, int index, ShadowEntry entry) => SetPage(Pages[page].With(index, entry));

    ShadowState RemoveEntry(ShadowKey page, int index) => SetPage(Pages[page].Without(index));

    ShadowState UpdateLeaves(Func<ShadowEntry.Leaf, bool> which, Func<ShadowEntry.Leaf, ShadowEntry.Leaf> update)
    {
        var state = this;
        foreach (var (page, index, leaf) in Leaves().Where(l => which(l.Leaf)).ToList())
            state = state.SetEntry(page, index, update(leaf));
        return state;
    }

    ShadowState RemoveLeaves(Func<ShadowEntry.Leaf, bool> which)
    {
        var state = this;
        foreach (var (page, index, _) in Leaves().Where(l => which(l.Leaf)).ToList())
            state = state.RemoveEntry(page, index);
        return state;
    }

    // ---- results ----

    ShadowStepped WithSlot(int id, Func<HostMemslot, ShadowStepped> then) =>
        Slots.TryGetValue(id, out var slot) ? then(slot) : Reject($"there is no slot {id}");

    static ShadowStepped Done(ShadowState state) => new(state, ShadowResult.Ok.Instance);
    ShadowStepped GeneralProtection(GpReason reason) => new(this, new ShadowResult.GuestFault(new WalkResult.GeneralProtection(reason)));
    ShadowStepped Reject(string reason) => new(this, new ShadowResult.Rejected(reason));

    // ---- equality and printing: by content ----

    public bool Equals(ShadowState? other) =>
        other is not null && Config.Equals(other.Config) && Roots.Equals(other.Roots) && GuestPcide == other.GuestPcide
        && Slots.SequenceEqual(other.Slots)
        && DirtyBitmaps.Count == other.DirtyBitmaps.Count
        && DirtyBitmaps.All(b => other.DirtyBitmaps.TryGetValue(b.Key, out var o) && b.Value.SetEquals(o))
        && Pages.SequenceEqual(other.Pages)
        && HostMemory.SequenceEqual(other.HostMemory)
        && Equals(GuestCpu, other.GuestCpu);

    public override int GetHashCode() => HashCode.Combine(Config, Slots.Count, Pages.Count);

    public override string ToString() =>
        $"{Config}, {Slots.Count} slots, {Pages.Count} shadow pages ({Pages.Values.Count(p => p.Unsync)} unsync), roots: {Roots}"
        + (GuestCpu is null ? ", paging off" : $", guest {GuestCpu}{(GuestPcide ? " PCIDE" : "")}");
}
