using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Write flooding and recycling of shadow EPT pages (docs/nested-ept.md, "Write flooding and recycling"): an upper-level
/// page whose table L1 writes three times without a fault going through it is zapped (KVM's detect_write_flooding),
/// with the children it leaves parentless (upstream 2de4085cccea) and the unsync pages below; a flooded root is dropped
/// and reloads; the count starts again on a fault, a hash hit and a root switch; live pages stay under the bound, the
/// oldest unrooted ones zapped first, every zapped page's native table returned to the pool.
/// </summary>
public sealed class NestedFloodTests : IDisposable
{
    const ulong RWX = 7, PS = 1 << 7, WB = 6 << 3;

    // The tree of NestedEptMmuTests: root 0x1000, Gpa4 through PDPT 0x2000, PD 0x3000 and PT 0x4000 to L1 frame 0x20.
    const ulong Eptp4 = 0x101E, Gpa4 = 0x80_8060_4567, HostPfn = 0x1000;

    readonly NativePagePool pool = new();
    INestedEptVm vm;

    public NestedFloodTests() => vm = Vm(0x40);

    INestedEptVm Vm(ulong pages, bool unsync = false)
    {
        var v = NestedEptVm.Create(46, executeOnly: true, pool, NestedRootPolicy.KeepAndResync, unsync);
        Assert.Equal(SlotStatus.Ok, v.CreateSlot(0, 0, pages, HostPfn));
        return v;
    }

    void Use(ulong pages, bool unsync = false)
    {
        vm.Dispose();
        vm = Vm(pages, unsync);
    }

    void Store(ulong gpa, ulong value) => Assert.Equal(NestedOutcomeKind.Ok, vm.L1Store(gpa, value, 8).Kind);

    void Ept4()
    {
        Store(0x1008, 0x2000 | RWX);
        Store(0x2010, 0x3000 | RWX);
        Store(0x3018, 0x4000 | RWX);
        Store(0x4020, 0x20000 | RWX | WB);
        Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(Eptp4).Kind);
    }

    NestedOutcome Read(ulong gpa) => vm.L2Access(gpa, AccessType.Read);

    static readonly NestedOutcome Translated4 = new(NestedOutcomeKind.Translated, Gpa4, 0x20567, 0x1020567, Faulted: true);

    (ulong Gfn, int Level)[] Pages() => [.. vm.ShadowPages().Select(p => (p.Gfn, p.Level)).OrderByDescending(p => p.Level).ThenBy(p => p.Gfn)];

    [Fact]
    public void Three_stores_into_an_upper_level_table_without_a_fault_zap_its_page_and_the_child_it_orphans()
    {
        Ept4();
        Assert.Equal(Translated4, Read(Gpa4));
        long inUse = pool.PagesInUse;
        // Two stores into the PD at entries L2 does not use: the PD's page drops those entries and stays.
        Store(0x3100, 0);
        Store(0x3108, 0);
        Assert.Equal(Translated4 with { Faulted = false }, Read(Gpa4));
        Assert.Equal(4, Pages().Length);
        // The third without a fault through the PD: it is no longer taken for a table, and its PT page goes with it.
        Store(0x3110, 0);
        Assert.Equal([(0x1UL, 4), (0x2UL, 3)], Pages());
        Assert.Equal(new NestedRecycleCounters(2, 64, ZappedForFlooding: 1, OrphansZapped: 1, ZappedAtLimit: 0, PagesZapped: 2), vm.RecycleCounters);
        Assert.Equal(inUse - 2, pool.PagesInUse);
        Assert.Empty(vm.InvariantProblems());
        // Transparent to L2: the next access walks L1's EPT again and rebuilds both.
        Assert.Equal(Translated4, Read(Gpa4));
        Assert.Equal(4, Pages().Length);
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_fault_through_the_page_starts_its_count_again()
    {
        Ept4();
        Read(Gpa4);
        const ulong Large = 0x80_80A0_1234; // PD entry 5: a 2 MiB leaf onto L1 gpa 0
        Store(0x3028, PS | RWX | WB);
        Store(0x3030, 0);
        // The fault through the PD (a new gpa) starts its count again: two more stores leave it.
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.Translated, Large, 0x1234, 0x1001234, Faulted: true), Read(Large));
        Store(0x3100, 0);
        Store(0x3108, 0);
        Assert.Contains((0x3UL, 2), Pages());
        Assert.Equal(0, vm.RecycleCounters.ZappedForFlooding);
        // A hit is the processor's walk, unseen by L0: it starts nothing, and the third store floods.
        Assert.False(Read(Large).Faulted);
        Store(0x3110, 0);
        Assert.DoesNotContain((0x3UL, 2), Pages());
        Assert.Equal(1, vm.RecycleCounters.ZappedForFlooding);
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void Last_level_pages_never_flood()
    {
        Ept4();
        Read(Gpa4);
        for (ulong i = 0; i < 6; i++)
            Store(0x4100 + 8 * i, 0);
        Assert.Equal(Translated4 with { Faulted = false }, Read(Gpa4));
        Assert.Equal(4, Pages().Length);
        Assert.Equal(0, vm.RecycleCounters.ZappedForFlooding);
    }

    [Fact]
    public void A_flooded_root_is_dropped_from_the_cached_roots_and_reloads_on_the_next_access()
    {
        Ept4();
        Read(Gpa4);
        Store(0x1100, 0);
        Store(0x1108, 0);
        Store(0x1110, 0);
        // Every page went: the root, and below it each page left without a parent.
        Assert.Empty(Pages());
        Assert.Equal([0UL], vm.CachedRootEptps());
        Assert.Equal(new NestedRecycleCounters(0, 64, 1, 3, 0, 4), vm.RecycleCounters);
        Assert.Empty(vm.InvariantProblems());
        long built = vm.Counters.RootsBuilt;
        Assert.Equal(Translated4, Read(Gpa4));
        Assert.Equal(built + 1, vm.Counters.RootsBuilt);
        Assert.Equal([Eptp4], vm.CachedRootEptps());
    }

    [Fact]
    public void A_flooded_previous_root_leaves_the_cached_roots_and_a_switch_back_starts_the_count_again()
    {
        Ept4();
        Store(0x5008, 0x2000 | RWX); // a second root at 0x5000 sharing the PDPT
        Read(Gpa4);
        Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(0x501E).Kind);
        Read(Gpa4);
        Assert.Equal([0x501EUL, Eptp4], vm.CachedRootEptps());
        // Two stores into the first root's table, a switch back (kvm_mmu_new_pgd starts its count again), two more: it stays.
        Store(0x1100, 0);
        Store(0x1108, 0);
        vm.LoadEptp(Eptp4);
        Store(0x1110, 0);
        Store(0x1118, 0);
        Assert.Contains((0x1UL, 4), Pages());
        // Switched away, the third store in a row floods it: the previous root is forgotten, the shared PDPT keeps its other parent.
        vm.LoadEptp(0x501E);
        Store(0x1120, 0);
        Assert.Equal([0x501EUL], vm.CachedRootEptps());
        Assert.DoesNotContain((0x1UL, 4), Pages());
        Assert.Contains((0x2UL, 3), Pages());
        Assert.Equal(Translated4 with { Faulted = false }, Read(Gpa4));
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void Zapping_a_page_zaps_the_unsync_pages_below_it_so_L2_sees_L1s_entry_again()
    {
        Use(0x40, unsync: true);
        Ept4();
        // A second PD at 0x6000 (PDPT entry 3) sharing the PT: the PT's page has two parents.
        const ulong Gpa6 = 0x80_C060_4567;
        Store(0x2018, 0x6000 | RWX);
        Store(0x6018, 0x4000 | RWX);
        Read(Gpa4);
        Read(Gpa6);
        Store(0x4020, 0x21000 | RWX | WB); // retargeted without INVEPT: the PT's page goes unsync, the old frame still mapped
        Assert.Equal(1, vm.UnsyncCounters.PagesUnsynced);
        Assert.Equal(0x1020567UL, Read(Gpa6).Hpa);
        // The first PD floods: its zap takes the unsync PT page too (mmu_zap_unsync_children), though the other PD links it.
        Store(0x3100, 0);
        Store(0x3108, 0);
        Store(0x3110, 0);
        Assert.Equal([(0x1UL, 4), (0x2UL, 3), (0x6UL, 2)], Pages());
        Assert.Empty(vm.InvariantProblems());
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.Translated, Gpa6, 0x21567, 0x1021567, Faulted: true), Read(Gpa6));
    }

    // Thirty independent paths: PML4E i -> PDPT 0x10+i -> PD 0x40+i -> PT 0x70+i -> L1 frame 0x100+i, for gpa i << 39.
    const int Paths = 30;

    static ulong PathGpa(int i) => ((ulong)i << 39) | 0x123;

    void Paths30(ulong root = 0x1000)
    {
        for (ulong i = 0; i < Paths; i++)
        {
            Store(root + 8 * i, ((0x10 + i) << 12) | RWX);
            Store(((0x10 + i) << 12), ((0x40 + i) << 12) | RWX);
            Store(((0x40 + i) << 12), ((0x70 + i) << 12) | RWX);
            Store(((0x70 + i) << 12), ((0x100 + i) << 12) | RWX | WB);
        }
    }

    [Fact]
    public void A_lower_bound_zaps_the_oldest_unrooted_pages_first_and_returns_their_tables()
    {
        Use(0x200);
        Assert.Equal(NestedOutcomeKind.Ok, vm.SetMaxShadowPages(1000).Kind); // room for all 91 first
        Paths30();
        vm.LoadEptp(Eptp4);
        for (int i = 0; i < Paths; i++)
            Assert.Equal(NestedOutcomeKind.Translated, Read(PathGpa(i)).Kind);
        Assert.Equal(1 + 3 * Paths, Pages().Length);
        long inUse = pool.PagesInUse;
        Assert.Equal(NestedOutcomeKind.Rejected, vm.SetMaxShadowPages(63).Kind);
        Assert.Equal(NestedOutcomeKind.Ok, vm.SetMaxShadowPages(64).Kind);
        // 27 pages over: the root is held, so the first nine paths (each PDPT taking its PD and PT along) go.
        Assert.Equal(64, Pages().Length);
        Assert.Equal(inUse - 27, pool.PagesInUse);
        for (ulong i = 0; i < Paths; i++)
            Assert.Equal(i >= 9, Pages().Contains((0x10 + i, 3)));
        Assert.Equal(new NestedRecycleCounters(64, 64, 0, 18, 27, 27), vm.RecycleCounters);
        Assert.Empty(vm.InvariantProblems());
        Assert.True(Read(PathGpa(0)).Faulted);
        Assert.False(Read(PathGpa(29)).Faulted);
    }

    [Fact]
    public void Many_EPTPs_and_tables_stay_under_the_default_bound_with_no_page_leaked()
    {
        // 0x200 pages of L1 memory: KVM's default bound is 64 (20 per 1000 pages is less).
        Use(0x200);
        ulong[] roots = [0x1000, 0x5000, 0x6000, 0x7000, 0x8000, 0x9000];
        foreach (ulong root in roots)
            Paths30(root);
        long before = pool.PagesInUse; // L1's memory, written: every native page from here is a shadow page
        Assert.Equal(64, vm.MaxShadowPages);
        for (int round = 0; round < 3; round++)
        {
            foreach (ulong root in roots)
            {
                Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(root | 0x1E).Kind);
                for (int i = round; i < Paths; i += 2)
                {
                    Assert.Equal(new NestedOutcome(NestedOutcomeKind.Translated, PathGpa(i), ((0x100UL + (ulong)i) << 12) | 0x123,
                        ((HostPfn + 0x100 + (ulong)i) << 12) | 0x123, Faulted: true), Read(PathGpa(i)) with { Faulted = true });
                    Assert.InRange(vm.RecycleCounters.LivePages, 1, 64);
                    Assert.Equal(vm.RecycleCounters.LivePages, pool.PagesInUse - before);
                }
                Assert.Empty(vm.InvariantProblems());
            }
        }
        var counters = vm.RecycleCounters;
        Assert.True(counters.ZappedAtLimit > 0, "the bound was met");
        Assert.Equal(counters.LivePages, Pages().Length);
        Assert.Equal(vm.Counters.ShadowPagesCreated - counters.PagesZapped, counters.LivePages);
        // The cached roots were never taken: four EPTPs held, each still a root.
        Assert.Equal(4, vm.CachedRootEptps().Count);
        Assert.Equal(4, vm.ShadowPages().Count(p => p.RootCount > 0));
    }

    [Fact]
    public void The_default_bound_follows_the_memslots()
    {
        Assert.Equal(64, vm.MaxShadowPages);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, 0x10000, 0x4000, 0x8000));
        Assert.Equal((0x40 + 0x4000) * 20 / 1000, vm.MaxShadowPages);
        Assert.Equal(SlotStatus.Ok, vm.DeleteSlot(1));
        Assert.Equal(64, vm.MaxShadowPages);
        // Once set, it stays whatever the slots do.
        Assert.Equal(NestedOutcomeKind.Ok, vm.SetMaxShadowPages(100).Kind);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, 0x10000, 0x4000, 0x8000));
        Assert.Equal(100, vm.MaxShadowPages);
    }

    public void Dispose()
    {
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
