using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Known answers for the rules the nested catalog entries 29-32 break (docs/bug-catalog.md), each on a hand-laid
/// 4-level EPT in L1's memory, and the allocation-free paths the nested benchmarks time
/// (bench/MmuSpec.Bench/NestedBenchmarks.cs): a cached EPTP switch, a shadow hit and INVEPT allocate nothing.
/// </summary>
public sealed class NestedEptCatalogTests : IDisposable
{
    const ulong R = 1, W = 2, X = 4, RWX = 7, A = 1 << 8, WB = 6 << 3;
    const ulong QRead = 1, QX = 1 << 5;
    const ulong HostPfn = 0x1000;

    // EPTP 0x101E: root 0x1000, WB, 4-level; 0x105E the same with EPT A/D (bit 6). Gpa: PML4 1, PDPT 2, PD 3, PT 4.
    const ulong Eptp4 = 0x101E, Eptp4AD = 0x105E, Gpa = 0x80_8060_4567;

    readonly NativePagePool pool = new();
    INestedEptVm vm;

    public NestedEptCatalogTests() => vm = Vm(NestedRootPolicy.KeepAndResync);

    INestedEptVm Vm(NestedRootPolicy policy)
    {
        var v = NestedEptVm.Create(46, executeOnly: true, pool, policy);
        Assert.Equal(SlotStatus.Ok, v.CreateSlot(0, 0, 0x40, HostPfn));
        return v;
    }

    void Store(ulong gpa, ulong value) => Assert.Equal(NestedOutcomeKind.Ok, vm.L1Store(gpa, value, 8).Kind);

    void Ept4(ulong pte = RWX | WB)
    {
        Store(0x1008, 0x2000 | RWX);
        Store(0x2010, 0x3000 | RWX);
        Store(0x3018, 0x4000 | RWX);
        Store(0x4020, 0x20000 | pte);
    }

    ulong Word(ulong l1Gpa)
    {
        ulong value = 0;
        vm.VisitHostMemory((hpa, v) => { if (hpa == (HostPfn << 12) + l1Gpa) value = v; });
        return value;
    }

    [Fact]
    public void A_shadow_leaf_built_by_a_fetch_through_an_execute_only_entry_still_refuses_a_read()
    {
        // Catalog 29 (d95c55687e11): an execute-only entry grants no read, in the walk or in the leaf it builds.
        Ept4(pte: X | WB);
        vm.LoadEptp(Eptp4);
        Assert.True(vm.L2Access(Gpa, AccessType.Fetch) is { Kind: NestedOutcomeKind.Translated, Faulted: true });
        Assert.True(vm.L2Access(Gpa, AccessType.Fetch) is { Kind: NestedOutcomeKind.Translated, Faulted: false });
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, Gpa, Qualification: QRead | QX, Faulted: true),
            vm.L2Access(Gpa, AccessType.Read));
    }

    [Fact]
    public void A_misconfiguration_carries_no_exit_qualification_even_right_after_a_violation()
    {
        // Catalog 31 (0c4765140351): SDM Vol. 3C §28.2.1 clears the field for every exit it does not list.
        Ept4(pte: W | R | WB);
        Store(0x4028, 0x21000 | W | WB); // the next PTE: write without read
        vm.LoadEptp(Eptp4);
        Assert.Equal(NestedOutcomeKind.EptViolation, vm.L2Access(Gpa, AccessType.Fetch).Kind); // fetch denied: a qualification of 0x1C
        var misconfig = vm.L2Access(Gpa + 0x1000, AccessType.Write);
        Assert.Equal((NestedOutcomeKind.EptMisconfiguration, EptMisconfigKind.WriteWithoutRead, 1, 0UL),
            (misconfig.Kind, misconfig.Misconfig, misconfig.Level, misconfig.Qualification));
    }

    [Fact]
    public void An_EPTP_with_EPT_AD_on_gets_its_own_root_not_the_cached_root_of_the_same_tables_without_it()
    {
        // Catalog 32 (0aab33e4f945): a cached root is reused only for the same EPTP (and so the same role).
        Ept4();
        vm.LoadEptp(Eptp4);
        vm.L2Access(Gpa, AccessType.Read);                 // A/D off: nothing written
        Assert.Equal(0x20000 | RWX | WB, Word(0x4020));
        vm.LoadEptp(Eptp4AD);
        Assert.True(vm.L2Access(Gpa, AccessType.Read) is { Kind: NestedOutcomeKind.Translated, Faulted: true });
        Assert.Equal(0x20000 | RWX | WB | A, Word(0x4020));
        Assert.Equal((2L, 0L), (vm.Counters.RootsBuilt, vm.Counters.CachedRootHits));
        Assert.Equal([Eptp4AD, Eptp4], vm.CachedRootEptps());
    }

    [Theory]
    [InlineData(NestedRootPolicy.KeepAndResync)]
    [InlineData(NestedRootPolicy.Upstream)]
    public void A_cached_EPTP_switch_a_shadow_hit_and_INVEPT_allocate_nothing_once_warm(NestedRootPolicy policy)
    {
        vm.Dispose();
        vm = Vm(policy);
        Ept4();
        Store(0x5008, 0x2000 | RWX); // a second root sharing the PDPT
        int good = 0;
        for (int round = 0; round < 3; round++)
            good += Cycle();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int round = 0; round < 10; round++)
            good += Cycle();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(13 * 6, good);
        Assert.Equal(0, allocated);

        // No assertion inside the measured loop: xunit's comparers allocate.
        int Cycle() =>
            (vm.LoadEptp(Eptp4).Kind == NestedOutcomeKind.Ok ? 1 : 0)
            + (vm.L2Access(Gpa, AccessType.Read).Kind == NestedOutcomeKind.Translated ? 1 : 0)
            + (vm.LoadEptp(0x501E).Kind == NestedOutcomeKind.Ok ? 1 : 0)
            + (vm.L2Access(Gpa, AccessType.Read).Kind == NestedOutcomeKind.Translated ? 1 : 0)
            + (vm.Invept(InveptKind.SingleContext, 0x501E).Kind == NestedOutcomeKind.Ok ? 1 : 0)
            + (vm.L2Access(Gpa, AccessType.Read).Kind == NestedOutcomeKind.Translated ? 1 : 0);
    }

    public void Dispose()
    {
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
