using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>The state after a TDP operation and what the operation returned.</summary>
public sealed record TdpStepped(TdpState State, VmResult Result);

/// <summary>
/// The MMU-model layer for two-dimensional paging, written to be obvious rather than fast: table
/// pages in an immutable map keyed by (gfn, role), every leaf's gfn stored explicitly, and every
/// question about the tables ("which leaves overlap this range?") answered by a plain scan.
/// <see cref="Step"/> is a pure function; the rules are those of docs/tdp-model.md.
/// </summary>
public sealed partial record TdpState(
    VmConfig Config,
    HostMemslots Memslots,
    PageSize MaxPageSize,
    ImmutableSortedDictionary<PageKey, TablePage> Pages,
    PageKey? DirectRoot,
    PageKey? MirrorRoot,
    ImmutableSortedDictionary<ulong, ulong> HostMemory,
    CpuState? GuestCpu)
{
    /// <summary>A new VM: no memslots, no tables, 1 GiB pages allowed.</summary>
    public static TdpState Create(VmConfig config) => new(config, HostMemslots.Empty, PageSize.Size1G,
        ImmutableSortedDictionary<PageKey, TablePage>.Empty, null, null,
        ImmutableSortedDictionary<ulong, ulong>.Empty, GuestCpu: null);

    public TdpStepped Step(TdpOp op) => SlotUpdateWaits(op) is { } waits ? Reject(waits) : op switch
    {
        TdpOp.CreateSlot c => CreateSlot(c),
        TdpOp.DeleteSlot d => WithSlot(d.Id, s => Done(ZapLeaves(s.BaseGfn, s.EndGfn).With(Memslots.Delete(s)) with
        {
            // The VMM unmapped the slot's memory: its host frames hold nothing any more.
            HostMemory = SlotMemory.Discard(HostMemory, s),
        })),
        TdpOp.MoveSlot m => MoveSlot(m),
        TdpOp.SetDirtyLogging d => WithSlot(d.Id, s => Done(SetDirtyLogging(s, d.On))),
        TdpOp.GetDirtyLog g => WithSlot(g.Id, GetDirtyLog),
        TdpOp.AccessGpa a => Access(a.Gpa, a.Type),
        TdpOp.ZapRange z => z.StartGfn < z.EndGfn && z.EndGfn <= Config.GfnLimit
            ? Done(ZapLeaves(z.StartGfn, z.EndGfn))
            : Reject($"zap range [{Bits.Hex(z.StartGfn)}, {Bits.Hex(z.EndGfn)}) is empty or beyond the guest-physical space"),
        TdpOp.PreFault p => PreFault(p.Gpa, p.Size),
        TdpOp.Age a => Age(a.StartGfn, a.EndGfn),
        TdpOp.TestAge t => TestAge(t.StartGfn, t.EndGfn),
        TdpOp.ZapAll => Done(this with { Pages = Pages.Clear(), DirectRoot = null, MirrorRoot = null }),
        TdpOp.SetMaxPageSize p => p.Size is PageSize.Size4K or PageSize.Size2M or PageSize.Size1G
            ? Done(this with { MaxPageSize = p.Size })
            : Reject($"{p.Size.Name()} is not a TDP page size"),
        TdpOp.GuestStore g => GuestStore(g),
        TdpOp.GuestSetPaging p => GuestSetPaging(p),
        TdpOp.GuestAccess a => GuestAccess(a.Access),
        TdpOp.HostInvalidateStart i => InvalidateStart(i.StartGfn, i.EndGfn),
        TdpOp.HostInvalidateEnd i => InvalidateEnd(i.StartGfn, i.EndGfn),
        TdpOp.TrackWrites t => TrackWrites(t.Gfn),
        TdpOp.UntrackWrites u => UntrackWrites(u.Gfn),
        _ => throw new ArgumentException($"unknown operation {op}", nameof(op)),
    };

    // ---- memslots (their rules and dirty logging are HostMemslots'; the MMU zaps and write-protects) ----

    /// <summary>The memslots by id.</summary>
    public ImmutableSortedDictionary<int, HostMemslot> Slots => Memslots.Slots;

    /// <summary>Each logging slot's dirty bitmap (slot-relative offsets).</summary>
    public ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>> DirtyBitmaps => Memslots.DirtyBitmaps;

    TdpState With(HostMemslots memslots) => this with { Memslots = memslots };

    /// <summary>Memslots never hold the shared bit: they lie below it (the GFN-direct-bits series, Rick Edgecombe, 2024).</summary>
    ulong SlotGfnLimit => Config.SharedBit is { } s ? 1UL << (s - 12) : Config.GfnLimit;

    TdpStepped CreateSlot(TdpOp.CreateSlot c)
    {
        var slot = new HostMemslot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, c.HostPageSize, c.ReadOnly, DirtyLogging: false);
        if (Memslots.IdProblem(c.Id) is { } idProblem) return Reject(idProblem);
        if (c.HostPageSize is not (PageSize.Size4K or PageSize.Size2M or PageSize.Size1G)) return Reject("host pages are 4K, 2M or 1G");
        if (Memslots.RangeProblem(slot, SlotGfnLimit, Config.HostPfnLimit, $"{Config.Format} entries") is { } problem) return Reject(problem);
        return Done(With(Memslots.Create(slot)));
    }

    TdpStepped MoveSlot(TdpOp.MoveSlot m) => WithSlot(m.Id, s =>
    {
        if (Memslots.MoveProblem(s, m.NewBaseGfn, SlotGfnLimit) is { } problem) return Reject(problem);
        // KVM_MR_MOVE: the old gfns no longer map this slot, so their mappings go.
        return Done(ZapLeaves(s.BaseGfn, s.EndGfn).With(Memslots.Move(s, m.NewBaseGfn)));
    });

    TdpState SetDirtyLogging(HostMemslot s, bool on)
    {
        // Disabling: the collapsible links go, so huge pages come back (TdpState.Collapsible.cs).
        if (!on && s.DirtyLogging) return StopLogging(s);
        // Enabling: every mapping of the slot loses W, so the next write to each page faults and is logged.
        var state = on && !s.DirtyLogging ? WriteProtect(s.BaseGfn, s.EndGfn) : this;
        return state.With(Memslots.SetDirtyLogging(s, on));
    }

    TdpStepped GetDirtyLog(HostMemslot s)
    {
        var result = Memslots.FetchDirtyLog(s, out var after);
        var state = With(after);
        if (result is VmResult.DirtyLog log)
            foreach (ulong gfn in log.Gfns) state = state.WriteProtect(gfn, gfn + 1);
        return new TdpStepped(state, result);
    }

    // ---- the fault handler ----

    TdpStepped Translate(ulong gpa, AccessType type)
    {
        if (gpa >> Config.GpaBits != 0) return Reject($"gpa {Bits.Hex(gpa)} is beyond the {Config.GpaBits}-bit guest-physical space");
        bool write = type == AccessType.Write;
        // 1. Faults strip the shared bit; it only chooses the root (the GFN-direct-bits series, Rick Edgecombe, 2024).
        ulong gfn = (gpa >> 12) & ~Config.DirectBits;
        bool mirror = Config.SharedBit is not null && ((gpa >> 12) & Config.DirectBits) == 0;
        // 2, 3. No memslot, or a write to a read-only one: userspace emulates it.
        var slot = Slots.Values.FirstOrDefault(s => s.Contains(gfn));
        if (slot is null || (write && slot.ReadOnly)) return new TdpStepped(this, new TdpResult.MmioExit(gpa));
        // A write to a write-tracked gfn is emulated (TdpState.WriteTracking.cs).
        if (write && WriteTracked.Contains(gfn)) return new TdpStepped(this, new TdpResult.MmioExit(gpa));

        var found = FindLeaf(mirror, gfn);
        if (found is { } hit)
        {
            var leaf = hit.Leaf;
            // 4. A hit.
            if (!write || leaf.Writable) return new TdpStepped(this, Mapped(gpa, gfn, leaf, faulted: false));
            // A fault while the host changes the page behind the gfn: retry once it is done (TdpState.Notifier.cs).
            if (MustRetry(gfn)) return new TdpStepped(this, new TdpResult.Retry());
            // 5. A write-protection fault.
            if (!WriteFaultDropsLeaf(slot, leaf))
            {
                var unprotected = leaf.WithWritable(true);
                var state = SetEntry(hit.Page, hit.Index, unprotected).MarkDirty(slot, gfn);
                return new TdpStepped(state, Mapped(gpa, gfn, unprotected, faulted: true));
            }
            // A huge page in a logged slot, or over a write-tracked gfn: drop it and map smaller below.
            return RemoveEntry(hit.Page, hit.Index).Fault(gpa, gfn, mirror, slot, write);
        }
        // 6. A miss.
        return MustRetry(gfn) ? new TdpStepped(this, new TdpResult.Retry()) : Fault(gpa, gfn, mirror, slot, write);
    }

    /// <summary>
    /// KVM_PRE_FAULT_MEMORY (virt/kvm/kvm_main.c kvm_vcpu_pre_fault_memory, arch/x86/kvm/mmu/mmu.c
    /// kvm_arch_vcpu_pre_fault_memory): the range must be page aligned, non-empty and not wrap (else
    /// EINVAL). Then, from its start, a read fault (the ioctl's error code has no write bit) by the rule
    /// above, and on to the end of the leaf that now maps the page (KVM advances to the end of the page
    /// at the level it mapped), until the range is done or a page is in no memslot or beyond the gpa width
    /// (KVM's no-slot fault is RET_PF_EMULATE, -ENOENT). Progress of any length returns it (KVM: 0 with the
    /// range advanced); none returns the error: <c>MmioExit</c> of the first gpa for ENOENT. So a read-only
    /// slot is mapped read-only, a logging slot 4 KiB read-only and nothing is marked dirty.
    /// The model has no private/shared attributes: the shared bit in the gpa picks the root, as for an
    /// access (KVM takes the gpa without it and picks by the page's attribute; an alias is EINVAL there).
    /// On a hit the step is the existing leaf's size, not the level a fault would pick now, so
    /// every page of the range done is mapped afterwards.
    /// </summary>
    TdpStepped PreFault(ulong gpa, ulong size)
    {
        if (size == 0 || ((gpa | size) & 0xFFF) != 0 || gpa + size < gpa)
            return Reject($"pre-fault range [{Bits.Hex(gpa)}, +{Bits.Hex(size)}) is empty, not page aligned or wraps");
        ulong end = gpa + size, at = gpa;
        var state = this;
        while (at < end && at >> Config.GpaBits == 0)
        {
            var fault = state.Prefetch(at);
            if (fault.Result is TdpResult.Retry && at == gpa) return fault;   // KVM's loop waits out the invalidation
            if (fault.Result is not TdpResult.Mapped m) break;
            state = fault.State;
            ulong leafBytes = 1UL << m.Size.Shift();
            at = (at & ~(leafBytes - 1)) + leafBytes;
        }
        return at == gpa
            ? new TdpStepped(this, new TdpResult.MmioExit(gpa))
            : new TdpStepped(state, new TdpResult.Populated(Math.Min(at, end) - gpa));
    }

    TdpStepped Fault(ulong gpa, ulong gfn, bool mirror, HostMemslot slot, bool write)
    {
        int target = MappingLevel(slot, gfn);
        var state = this;
        var page = (mirror ? MirrorRoot : DirectRoot) ?? new PageKey(0, new MmuRole(Config.RootLevel, mirror));
        if (!state.Pages.ContainsKey(page))
        {
            state = state with { Pages = state.Pages.Add(page, TablePage.Empty(page)) };
            state = mirror ? state with { MirrorRoot = page } : state with { DirectRoot = page };
        }

        for (int level = Config.RootLevel; level > target; level--)
        {
            int index = state.Index(level, gfn, mirror);
            var childKey = new PageKey(gfn & ~((1UL << (9 * (level - 1))) - 1), new MmuRole(level - 1, mirror));
            switch (state.Pages[page].Entries.GetValueOrDefault(index))
            {
                case Spte.Table t:
                    page = t.Child;
                    continue;
                case Spte.Leaf:
                    // A huge page in the way is zapped and replaced by a table (KVM tdp_mmu_map).
                    state = state.RemoveEntry(page, index);
                    break;
            }
            state = state with { Pages = state.Pages.Add(childKey, TablePage.Empty(childKey)) };
            state = state.SetEntry(page, index, new Spte.Table(childKey));
            page = childKey;
        }

        int leafIndex = state.Index(target, gfn, mirror);
        if (state.Pages[page].Entries.GetValueOrDefault(leafIndex) is Spte.Table old)
            state = state.FreeSubtree(old.Child);     // a huge leaf replaces a whole subtree
        ulong leafGfn = gfn & ~((1UL << (9 * (target - 1))) - 1);
        bool writable = !slot.ReadOnly && !WriteTracked.Contains(gfn) && (!slot.DirtyLogging || write);
        var leaf = new Spte.Leaf(leafGfn, target, HostFrame(slot, leafGfn), writable);
        state = state.SetEntry(page, leafIndex, leaf);
        if (write) state = state.MarkDirty(slot, gfn);
        return new TdpStepped(state, Mapped(gpa, gfn, leaf, faulted: true));
    }

    /// <summary>
    /// The largest level a fault at <paramref name="gfn"/> may map (KVM kvm_mmu_max_mapping_level):
    /// limited by the policy, the host page size and dirty logging, then lowered until the aligned
    /// range lies inside the slot, gfn and host frame are equally aligned, its host pages are settled
    /// and it holds no write-tracked gfn.
    /// </summary>
    public int MappingLevel(HostMemslot slot, ulong gfn)
    {
        int level = Math.Min(LevelOf(MaxPageSize), Math.Min(LevelOf(slot.HostPageSize), 3));
        if (slot.DirtyLogging) level = 1;
        for (; level > 1; level--)
        {
            ulong frames = 1UL << (9 * (level - 1));
            ulong start = gfn & ~(frames - 1);
            bool inside = start >= slot.BaseGfn && start + frames <= slot.EndGfn;
            bool aligned = (slot.HostPfnBase - slot.BaseGfn) % frames == 0;
            if (inside && aligned && HostPagesSettled(slot, start, frames) && !TracksWithin(start, level)) break;
        }
        return level;
    }

    static int LevelOf(PageSize size) => size switch
    {
        PageSize.Size4K => 1,
        PageSize.Size2M => 2,
        _ => 3,
    };

    static TdpResult.Mapped Mapped(ulong gpa, ulong gfn, Spte.Leaf leaf, bool faulted) =>
        new(((leaf.HostPfn + (gfn - leaf.Gfn)) << 12) | (gpa & 0xFFF), leaf.Size, faulted);

    TdpState MarkDirty(HostMemslot slot, ulong gfn) => With(Memslots.MarkDirty(slot, gfn));

    // ---- the guest: its memory and its own paging (docs/tdp-model.md, "Guest memory") ----

    /// <summary>
    /// Guest-physical memory as the guest sees it now: the memslots, and in them the host memory
    /// that backs them. The walk reads its tables from here, as KVM's software walker reads
    /// guest memory through memslots.
    /// </summary>
    public GuestMemory GuestMemoryView() => SlotMemory.View(Slots, HostMemory);

    /// <summary>Host memory with <paramref name="size"/> bytes stored at <paramref name="hpa"/>.</summary>
    TdpState StoreHost(ulong hpa, ulong value, int size) => this with { HostMemory = SlotMemory.Store(HostMemory, hpa, value, size) };

    TdpStepped GuestStore(TdpOp.GuestStore g)
    {
        if (g.Size is not (4 or 8) || g.Gpa % (ulong)g.Size != 0) return Reject($"a guest store is 4 or 8 bytes, aligned ({g.Size} at {Bits.Hex(g.Gpa)})");
        var access = Access(g.Gpa, AccessType.Write);
        return access.Result is TdpResult.Mapped m
            ? new TdpStepped(access.State.StoreHost(HomeHpa(g.Gpa), g.Value, g.Size), m)
            : access;
    }

    TdpStepped GuestSetPaging(TdpOp.GuestSetPaging p)
    {
        if (p.Controls is null) return Done(this with { GuestCpu = null });
        CpuStateOrGp loaded;
        try { loaded = CpuState.LoadCr3(p.Controls, p.Cr3, GuestMemoryView()); }
        catch (ArgumentException e) { return Reject(e.Message); }
        return loaded.State is { } cpu
            ? Done(this with { GuestCpu = cpu })
            : new TdpStepped(this, new TdpResult.GuestFault(new WalkResult.GeneralProtection(loaded.Fault!.Value)));
    }

    /// <summary>
    /// A guest access: with paging off the gva is the gpa; with paging on, the guest's own walk
    /// (the walk issue's), whose every table read and A/D update is an access through the MMU,
    /// then the access itself (two-dimensional paging, in the order docs/tdp-model.md gives).
    /// </summary>
    TdpStepped GuestAccess(Access access)
    {
        if (GuestCpu is null)
            return access.Gva >> Config.GpaBits == 0 ? Access(access.Gva, access.Type) : Reject($"gva {Bits.Hex(access.Gva)} is beyond the guest-physical space");

        var view = GuestMemoryView();
        WalkExplanation walk;
        try { walk = PageWalk.Walk(GuestCpu, view, access); }
        catch (ArgumentException e) { return Reject(e.Message); }

        int entryBytes = GuestCpu.Controls.Mode.EntryBytes();
        var state = this;
        foreach (var step in walk.Steps)
            if (step.EntryGpa is { } entryGpa && view.IsBacked(entryGpa, entryBytes))
                state = state.Access(entryGpa, AccessType.Read).State;          // the table read
        if (walk.Result is not WalkResult.Translated t)
            return new TdpStepped(state, new TdpResult.GuestFault(walk.Result));

        foreach (var update in walk.Updates)
        {
            var write = state.Access(update.Gpa, AccessType.Write);
            state = write.State;
            // A read-only slot cannot take the update: KVM drops A/D updates there.
            if (write.Result is TdpResult.Mapped m) state = state.StoreHost(HomeHpa(update.Gpa), update.After, entryBytes);
        }
        return state.Access(t.Gpa, access.Type);
    }

    // ---- the tables ----

    /// <summary>
    /// The index of <paramref name="gfn"/> in a table at <paramref name="level"/>: the direct root's
    /// tables are indexed with the shared bit added back, the mirror root's without it (the GFN-direct-bits
    /// series, Rick Edgecombe, 2024).
    /// </summary>
    int Index(int level, ulong gfn, bool mirror) =>
        (int)(((gfn | (mirror ? 0 : Config.DirectBits)) >> (9 * (level - 1))) & 511);

    /// <summary>The leaf covering <paramref name="gfn"/> under the chosen root, by walking from the root.</summary>
    (PageKey Page, int Index, Spte.Leaf Leaf)? FindLeaf(bool mirror, ulong gfn)
    {
        var page = mirror ? MirrorRoot : DirectRoot;
        for (int level = Config.RootLevel; page is not null; level--)
        {
            int index = Index(level, gfn, mirror);
            switch (Pages[page].Entries.GetValueOrDefault(index))
            {
                case Spte.Leaf leaf: return (page, index, leaf);
                case Spte.Table t: page = t.Child; break;
                default: return null;
            }
        }
        return null;
    }

    /// <summary>Every leaf of every table page, both roots: the scan behind zapping and write protection.</summary>
    public IEnumerable<(PageKey Page, int Index, Spte.Leaf Leaf)> Leaves() =>
        from p in Pages.Values
        from e in p.Entries
        where e.Value is Spte.Leaf
        select (p.Key, e.Key, (Spte.Leaf)e.Value);

    /// <summary>Removes every leaf overlapping [start, end); tables stay (KVM kvm_tdp_mmu_zap_leafs).</summary>
    public TdpState ZapLeaves(ulong start, ulong end)
    {
        var state = this;
        foreach (var (page, index, leaf) in Leaves().Where(l => l.Leaf.Overlaps(start, end)).ToList())
            state = state.ApplyWalkRule(RangeWalkKind.Zap, page, index, leaf, out _);
        return state;
    }

    /// <summary>Clears W on every leaf overlapping [start, end).</summary>
    public TdpState WriteProtect(ulong start, ulong end)
    {
        var state = this;
        foreach (var (page, index, leaf) in Leaves().Where(l => l.Leaf.Writable && l.Leaf.Overlaps(start, end)).ToList())
            state = state.ApplyWalkRule(RangeWalkKind.WriteProtect, page, index, leaf, out _);
        return state;
    }

    TdpState SetEntry(PageKey page, int index, Spte entry) =>
        this with { Pages = Pages.SetItem(page, Pages[page].With(index, entry)) };

    TdpState RemoveEntry(PageKey page, int index) =>
        this with { Pages = Pages.SetItem(page, Pages[page].Without(index)) };

    /// <summary>Removes a table page and every table below it.</summary>
    TdpState FreeSubtree(PageKey key)
    {
        var state = this;
        foreach (var child in Pages[key].Entries.Values.OfType<Spte.Table>())
            state = state.FreeSubtree(child.Child);
        return state with { Pages = state.Pages.Remove(key) };
    }

    // ---- results ----

    TdpStepped WithSlot(int id, Func<HostMemslot, TdpStepped> then) =>
        Slots.TryGetValue(id, out var slot) ? then(slot) : Reject(HostMemslots.NoSlot(id));

    static TdpStepped Done(TdpState state) => new(state, VmResult.Ok.Instance);
    TdpStepped Reject(string reason) => new(this, new VmResult.Rejected(reason));

    // ---- equality and printing: by content ----

    public bool Equals(TdpState? other) =>
        other is not null && Config.Equals(other.Config) && MaxPageSize == other.MaxPageSize
        && Equals(DirectRoot, other.DirectRoot) && Equals(MirrorRoot, other.MirrorRoot)
        && Memslots.Equals(other.Memslots)
        && Pages.SameEntries(other.Pages)
        && HostMemory.SameEntries(other.HostMemory)
        && Equals(GuestCpu, other.GuestCpu)
        && Notifier.Equals(other.Notifier)
        && WriteTracked.SetEquals(other.WriteTracked);

    public override int GetHashCode() => HashCode.Combine(Config, Slots.Count, Pages.Count);

    public override string ToString() =>
        $"{Config}, max {MaxPageSize.Name()}, {Slots.Count} slots, {Pages.Count} table pages, roots {DirectRoot?.ToString() ?? "-"} / {MirrorRoot?.ToString() ?? "-"}";
}
