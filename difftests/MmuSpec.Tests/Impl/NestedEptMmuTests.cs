using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Known answers for the nested EPT MMU (impl/Nested) on hand-laid EPT trees in L1's memory: translation and shadow
/// hits, the exit qualification of reflected violations, each misconfiguration, MMIO exits, write tracking, EPT A/D
/// with the clean-leaf write protection, L1 large pages, role access, the cached roots under both INVEPT policies,
/// and every native page freed. Bit values are written from the SDM (Vol. 3C §29.3.2, the exit-qualification table).
/// </summary>
public sealed class NestedEptMmuTests : IDisposable
{
    const ulong R = 1, W = 2, X = 4, RWX = 7, PS = 1 << 7, A = 1 << 8, D = 1 << 9, WB = 6 << 3;
    const ulong QRead = 1, QWrite = 2, QFetch = 4, QR = 1 << 3, QW = 1 << 4, QX = 1 << 5;

    // L1 RAM: gfns 0..0x3f on host frames 0x1000..0x103f.
    const ulong HostPfn = 0x1000;

    // 4-level EPT, root 0x1000 (EPTP 0x1000 | WB 6 | (4-1) << 3 = 0x101e; with A/D bit 6: 0x105e).
    // Gpa4 = 0x80_8060_4567: PML4 index 1, PDPT index 2, PD index 3, PT index 4, so
    //   PML4E @ 0x1008 -> PDPT 0x2000, PDPTE @ 0x2010 -> PD 0x3000, PDE @ 0x3018 -> PT 0x4000, PTE @ 0x4020 -> frame.
    const ulong Eptp4 = 0x101E, Eptp4AD = 0x105E, Gpa4 = 0x80_8060_4567;

    readonly NativePagePool pool = new();
    INestedEptVm vm;

    public NestedEptMmuTests() => vm = Vm();

    /// <summary>A fresh VM in place of the constructor's (disposed first, so the pool's count stays exact).</summary>
    void Use(bool executeOnly = true, NestedRootPolicy policy = NestedRootPolicy.KeepAndResync)
    {
        vm.Dispose();
        vm = Vm(executeOnly, policy);
    }

    INestedEptVm Vm(bool executeOnly = true, NestedRootPolicy policy = NestedRootPolicy.KeepAndResync)
    {
        var v = NestedEptVm.Create(46, executeOnly, pool, policy);
        Assert.Equal(SlotStatus.Ok, v.CreateSlot(0, 0, 0x40, HostPfn));
        return v;
    }

    void Store(ulong gpa, ulong value) => Assert.Equal(NestedOutcomeKind.Ok, vm.L1Store(gpa, value, 8).Kind);

    /// <summary>The tree for Gpa4 with the given rights per level; the PTE maps L1 frame <paramref name="frame"/>.</summary>
    void Ept4(ulong pml4e = RWX, ulong pdpte = RWX, ulong pde = RWX, ulong pte = RWX | WB, ulong frame = 0x20000)
    {
        Store(0x1008, 0x2000 | pml4e);
        Store(0x2010, 0x3000 | pdpte);
        Store(0x3018, 0x4000 | pde);
        Store(0x4020, frame | pte);
    }

    ulong Word(ulong l1Gpa)
    {
        ulong value = 0;
        vm.VisitHostMemory((hpa, v) => { if (hpa == (HostPfn << 12) + l1Gpa) value = v; });
        return value;
    }

    [Fact]
    public void An_L2_access_walks_L1s_EPT_once_and_then_hits_the_shadow()
    {
        Ept4();
        Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(Eptp4).Kind);
        var first = vm.L2Access(Gpa4, AccessType.Read);
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.Translated, Gpa4, 0x20567, 0x1020567, Faulted: true), first);
        Assert.Equal(first with { Faulted = false }, vm.L2Access(Gpa4, AccessType.Read));
        Assert.Equal(first with { Faulted = false }, vm.L2Access(Gpa4, AccessType.Write));
        // Root (level 4), PDPT, PD and PT shadow pages, each shadowing one of L1's tables.
        Assert.Equal([(0x1UL, 4), (0x2UL, 3), (0x3UL, 2), (0x4UL, 1)],
            vm.ShadowPages().Select(p => (p.Gfn, p.Level)).OrderByDescending(p => p.Level).ToArray());
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_violation_is_reflected_with_the_access_and_the_rights_of_the_entries_used()
    {
        Ept4(pdpte: R | X, pte: R | W | WB);
        vm.LoadEptp(Eptp4);
        // The rights AND to R (X cleared by the PTE, W by the PDPTE): a write needs W.
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, Gpa4, Qualification: QWrite | QR, Faulted: true), vm.L2Access(Gpa4, AccessType.Write));
        Assert.Equal(QFetch | QR, vm.L2Access(Gpa4, AccessType.Fetch).Qualification);
        // Not present: the rights include the not-present entry, so bits 5:3 are 0.
        Store(0x3018, 0);
        Assert.Equal(QRead, vm.L2Access(Gpa4, AccessType.Read).Qualification);
    }

    [Theory]
    [InlineData(W | WB, 1, EptMisconfigKind.WriteWithoutRead)]
    [InlineData(W | X | WB, 1, EptMisconfigKind.WriteWithoutRead)]
    [InlineData(X | WB, 1, EptMisconfigKind.ExecuteOnlyUnsupported)]
    [InlineData(R | (2 << 3), 1, EptMisconfigKind.MemoryType)]
    [InlineData(R | (7 << 3), 1, EptMisconfigKind.MemoryType)]
    [InlineData(R | WB | (1UL << 46), 1, EptMisconfigKind.ReservedBits)]
    public void A_misconfigured_leaf_is_reported_with_its_kind_and_level(ulong pte, int level, EptMisconfigKind kind)
    {
        Use(executeOnly: false);
        Ept4(pte: pte);
        vm.LoadEptp(Eptp4);
        var o = vm.L2Access(Gpa4, AccessType.Read);
        Assert.Equal((NestedOutcomeKind.EptMisconfiguration, kind, level), (o.Kind, o.Misconfig, o.Level));
    }

    [Fact]
    public void Bits_7_to_3_of_an_entry_that_references_a_table_are_reserved_and_beat_a_rights_violation()
    {
        Ept4(pml4e: R, pde: RWX | (1 << 3));
        vm.LoadEptp(Eptp4);
        var o = vm.L2Access(Gpa4, AccessType.Write);
        Assert.Equal((NestedOutcomeKind.EptMisconfiguration, EptMisconfigKind.ReservedBits, 2), (o.Kind, o.Misconfig, o.Level));
    }

    [Fact]
    public void Execute_only_is_a_translation_for_a_fetch_where_it_is_offered()
    {
        Ept4(pte: X | WB);
        vm.LoadEptp(Eptp4);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2Access(Gpa4, AccessType.Fetch).Kind);
        Assert.Equal(QRead | QX, vm.L2Access(Gpa4, AccessType.Read).Qualification);
    }

    [Fact]
    public void An_L1_gpa_outside_the_memslots_exits_to_userspace_and_maps_nothing()
    {
        Ept4(frame: 0x100000);
        vm.LoadEptp(Eptp4);
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.MmioExit, Gpa4, 0x100567, Faulted: true), vm.L2Access(Gpa4, AccessType.Read));
        Assert.Equal(NestedOutcomeKind.MmioExit, vm.L2Access(Gpa4, AccessType.Read).Kind);
        // The slot appears: the same access now lands in it.
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, 0x100, 1, 0x2000));
        Assert.Equal(0x2000567UL, vm.L2Access(Gpa4, AccessType.Read).Hpa);
    }

    [Fact]
    public void An_L1_store_into_a_shadowed_EPT_table_drops_what_was_built_from_the_entry()
    {
        Ept4();
        vm.LoadEptp(Eptp4);
        Assert.False(vm.L2Access(Gpa4, AccessType.Read) is { Kind: NestedOutcomeKind.Translated, Faulted: false });
        Assert.True(vm.L2Access(Gpa4, AccessType.Read) is { Kind: NestedOutcomeKind.Translated, Faulted: false });
        // L1 retargets the PTE, then clears the PDE: each change shows at once (no INVEPT needed: the shadow follows).
        Store(0x4020, 0x21000 | RWX | WB);
        Assert.Equal(0x21567UL, vm.L2Access(Gpa4, AccessType.Read).L1Gpa);
        vm.L1Store(0x301C, 0, 4);   // the PDE's upper half: the whole entry is dropped
        Assert.True(vm.L2Access(Gpa4, AccessType.Read) is { Kind: NestedOutcomeKind.Translated, Faulted: true });
        Store(0x3018, 0);
        Assert.Equal(NestedOutcomeKind.EptViolation, vm.L2Access(Gpa4, AccessType.Read).Kind);
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void With_EPT_AD_the_walk_sets_A_on_every_entry_and_D_on_a_writes_leaf_and_a_clean_leaf_maps_read_only()
    {
        Ept4();
        vm.LoadEptp(Eptp4AD);
        vm.L2Access(Gpa4, AccessType.Read);
        Assert.Equal([0x2000 | RWX | A, 0x3000 | RWX | A, 0x4000 | RWX | A, 0x20000 | RWX | WB | A],
            new[] { Word(0x1008), Word(0x2010), Word(0x3018), Word(0x4020) });
        // The leaf was clean at the read: the shadow maps it read-only, so the write faults and sets D.
        Assert.True(vm.L2Access(Gpa4, AccessType.Write) is { Kind: NestedOutcomeKind.Translated, Faulted: true });
        Assert.Equal(0x20000 | RWX | WB | A | D, Word(0x4020));
        Assert.True(vm.L2Access(Gpa4, AccessType.Write) is { Kind: NestedOutcomeKind.Translated, Faulted: false });
        // Without bit 6 in the EPTP nothing is written.
        vm.LoadEptp(Eptp4);
        Store(0x4020, 0x20000 | RWX | WB);
        vm.L2Access(Gpa4, AccessType.Write);
        Assert.Equal(0x20000 | RWX | WB, Word(0x4020));
    }

    [Fact]
    public void An_L1_2MiB_page_is_shadowed_by_a_direct_page_with_the_computed_gfn_and_a_1GiB_page_by_two_levels()
    {
        // PDE @ 0x3018 maps 2 MiB at L1 0x0 (gfn 0): Gpa4's 4 KiB piece 4 lands at L1 0x4567.
        Ept4();
        Store(0x3018, 0x0 | PS | RWX | WB);
        vm.LoadEptp(Eptp4);
        Assert.Equal(0x4567UL, vm.L2Access(Gpa4, AccessType.Read).L1Gpa);
        Assert.Equal(0x5567UL, vm.L2Access(Gpa4 + 0x1000, AccessType.Read).L1Gpa);
        Assert.Contains(vm.ShadowPages(), p => p is { Direct: true, Level: 1, Gfn: 0 });
        // The PDPTE maps 1 GiB at L1 0: Gpa4's offset in its 1 GiB page is 0x60_4567.
        Store(0x2010, 0x0 | PS | RWX | WB);
        Assert.Equal(NestedOutcomeKind.MmioExit, vm.L2Access(Gpa4, AccessType.Read).Kind);   // L1 0x60_4567 is beyond the slot
        Assert.Equal(0x567UL, vm.L2Access(Gpa4 & ~0x3FFF_FFFFUL | 0x567, AccessType.Read).L1Gpa);
        Assert.Contains(vm.ShadowPages(), p => p is { Direct: true, Level: 2, Gfn: 0 });
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_table_reached_through_paths_with_different_rights_gets_a_page_per_rights()
    {
        // PML4E 1 (RWX) and PML4E 2 (R only) both reference the PDPT at 0x2000: Gpa4 and GpaR share every table below.
        const ulong GpaR = 0x100_8060_4567;
        Ept4();
        Store(0x1010, 0x2000 | R);
        vm.LoadEptp(Eptp4);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2Access(GpaR, AccessType.Read).Kind);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2Access(Gpa4, AccessType.Write).Kind);
        // Were the PDPT's shadow shared, GpaR's write would hit Gpa4's writable leaf.
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, GpaR, Qualification: QWrite | QR, Faulted: true), vm.L2Access(GpaR, AccessType.Write));
        Assert.Equal(2, vm.ShadowPages().Count(p => p.Gfn == 0x2));
    }

    /// <summary>Two EPT roots: 0x1000 (Ept4) and 0x5000, whose PML4E 1 shares the PDPT at 0x2000.</summary>
    void TwoRoots()
    {
        Ept4();
        Store(0x5008, 0x2000 | RWX);
    }

    [Fact]
    public void A_previous_root_is_used_again_after_an_EPTP_switch_back_without_a_rebuild()
    {
        TwoRoots();
        vm.LoadEptp(Eptp4);
        vm.L2Access(Gpa4, AccessType.Read);
        vm.LoadEptp(0x501E);
        vm.L2Access(Gpa4, AccessType.Read);
        vm.LoadEptp(Eptp4);
        Assert.True(vm.L2Access(Gpa4, AccessType.Read) is { Kind: NestedOutcomeKind.Translated, Faulted: false });
        Assert.Equal((2L, 1L), (vm.Counters.RootsBuilt, vm.Counters.CachedRootHits));
        Assert.Equal([Eptp4, 0x501EUL], vm.CachedRootEptps());
    }

    [Fact]
    public void Four_roots_are_cached_and_a_fifth_EPTP_evicts_the_least_recent()
    {
        TwoRoots();
        Store(0x6008, 0x2000 | RWX);
        ulong[] eptps = [0x101E, 0x501E, 0x105E, 0x505E, 0x601E]; // A/D on and off key other roots of the same tables
        foreach (ulong e in eptps)
        {
            vm.LoadEptp(e);
            vm.L2Access(Gpa4, AccessType.Read);
        }
        Assert.Equal([0x601EUL, 0x505E, 0x105E, 0x501E], vm.CachedRootEptps());
        vm.LoadEptp(0x101E);
        Assert.Equal(0, vm.Counters.CachedRootHits);
        Assert.Empty(vm.InvariantProblems());
    }

    [Theory]
    [InlineData(NestedRootPolicy.Upstream, 3, 1, 0)]
    [InlineData(NestedRootPolicy.KeepAndResync, 2, 0, 1)]
    public void INVEPT_single_context_frees_the_matching_root_under_KVMs_policy_and_keeps_it_under_keep_and_resync(
        NestedRootPolicy policy, long built, long freed, long kept)
    {
        Use(policy: policy);
        TwoRoots();
        vm.LoadEptp(0x501E);
        vm.L2Access(Gpa4, AccessType.Read);
        vm.LoadEptp(Eptp4);
        vm.L2Access(Gpa4, AccessType.Read);
        // The descriptor names root 0x1000 with the other A/D bit: the same EP4TA, so the current root matches, 0x5000's does not.
        Assert.Equal(NestedOutcomeKind.Ok, vm.Invept(InveptKind.SingleContext, Eptp4AD).Kind);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2Access(Gpa4, AccessType.Read).Kind);
        Assert.Equal((built, freed, kept), (vm.Counters.RootsBuilt, vm.Counters.RootsFreedByInvept, vm.Counters.RootsKeptAtInvept));
        Assert.Equal([Eptp4, 0x501EUL], vm.CachedRootEptps());
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void INVEPT_all_context_under_KVMs_policy_frees_every_root()
    {
        Use(policy: NestedRootPolicy.Upstream);
        TwoRoots();
        vm.LoadEptp(0x501E);
        vm.L2Access(Gpa4, AccessType.Read);
        vm.LoadEptp(Eptp4);
        vm.L2Access(Gpa4, AccessType.Read);
        vm.Invept(InveptKind.AllContext, 0);
        Assert.Equal([0UL], vm.CachedRootEptps());
        Assert.Equal(2, vm.Counters.RootsFreedByInvept);
    }

    [Theory]
    [InlineData(0x1019UL)]   // memory type 1
    [InlineData(0x1016UL)]   // walk length 3
    [InlineData(0x109EUL)]   // bit 7
    [InlineData(0x4000_0000_101EUL)] // bit 46, at MAXPHYADDR
    public void An_invalid_EPTP_is_refused_by_VM_entry_and_by_INVEPT_single_context(ulong eptp)
    {
        Assert.Equal(NestedOutcomeKind.Rejected, vm.LoadEptp(eptp).Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.Invept(InveptKind.SingleContext, eptp).Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.L2Access(0, AccessType.Read).Kind); // L2 never entered
    }

    [Fact]
    public void Deleting_a_slot_zaps_every_page_and_its_memory_is_gone()
    {
        Ept4();
        vm.LoadEptp(Eptp4);
        vm.L2Access(Gpa4, AccessType.Read);
        Assert.Equal(SlotStatus.Ok, vm.DeleteSlot(0));
        Assert.Empty(vm.ShadowPages());
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x40, HostPfn));
        // The root table reads zero now: its PML4E is not present.
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, Gpa4, Qualification: QRead, Faulted: true), vm.L2Access(Gpa4, AccessType.Read));
    }

    [Fact]
    public void Every_native_page_is_freed_when_the_vm_is_disposed()
    {
        TwoRoots();
        vm.LoadEptp(Eptp4AD);
        vm.L2Access(Gpa4, AccessType.Write);
        vm.LoadEptp(0x501E);
        vm.L2Access(Gpa4, AccessType.Fetch);
        Assert.True(pool.PagesInUse > 0);
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    public void Dispose()
    {
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
