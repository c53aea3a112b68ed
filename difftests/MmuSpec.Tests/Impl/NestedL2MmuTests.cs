using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Known answers for L2's gva accesses in the nested EPT MMU (impl/Nested/NestedEptMmu.L2.cs): L2's tables read and their
/// A/D bits written by the processor through the shadow EPT, a shadow miss taking the EPT-violation path, the exit
/// qualification's bits 7 and 8, EPT A/D on paging-structure accesses. The layout is NestedL2StateTests' (the spec's
/// known answers): EPT PTE @ 0x4000 + 8n maps L2 gpa n*0x1000 to L1 n*0x1000 (n = 0x10..0x13 L2's tables, 0x15 data);
/// L2 4-level, CR3 0x10000, gva 0x5123 -> L2 gpa 0x15123 -> hpa 0x1015123.
/// </summary>
public sealed class NestedL2MmuTests : IDisposable
{
    const ulong Eptp = 0x101E, EptpAD = 0x105E, EptLeaf = 7 | 6 << 3, Gva = 0x5123;
    const ulong EptA = 1 << 8, EptD = 1 << 9;
    static readonly PagingControls Long4 = new(PagingMode.Long4, false, false, false, false, false, false, false, 0, 46);

    readonly NativePagePool pool = new();
    readonly INestedEptVm vm;

    public NestedL2MmuTests() => vm = NestedEptVm.Create(46, executeOnly: true, pool);

    void Setup(ulong eptp = Eptp, ulong pdptPageEpt = EptLeaf, ulong dataEpt = EptLeaf, ulong l2Pdpte = 0x12007, ulong l2Pte = 0x15007)
    {
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x40, 0x1000));
        foreach (var (gpa, value) in new (ulong, ulong)[]
        {
            (0x1000, 0x2007), (0x2000, 0x3007), (0x3000, 0x4007),
            (0x4080, 0x10000 | EptLeaf), (0x4088, 0x11000 | pdptPageEpt), (0x4090, 0x12000 | EptLeaf), (0x4098, 0x13000 | EptLeaf),
            (0x40A8, dataEpt == 0 ? 0 : (dataEpt & ~0xFFFUL) != 0 ? dataEpt : 0x15000 | dataEpt),
            (0x10000, 0x11007), (0x11000, l2Pdpte), (0x12000, 0x13007), (0x13028, l2Pte),
        })
            Assert.Equal(NestedOutcomeKind.Ok, vm.L1Store(gpa, value, 8).Kind);
        Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(eptp).Kind);
        Assert.Equal(NestedOutcomeKind.Ok, vm.SetL2Paging(true, Long4, 0x10000, new ulong[4]).Kind);
    }

    ulong Word(ulong l1Gpa)
    {
        ulong value = 0;
        vm.VisitHostMemory((hpa, v) => { if (hpa == 0x100_0000 + l1Gpa) value = v; });
        return value;
    }

    [Fact]
    public void A_gva_access_faults_in_shadow_pages_for_L2s_tables_then_hits_and_sets_L2s_A_and_D()
    {
        Setup();
        var translated = new NestedOutcome(NestedOutcomeKind.Translated, 0x15123, 0x15123, 0x1015123, Faulted: true);
        Assert.Equal(translated, vm.L2GvaAccess(Gva, AccessType.Write, Privilege.Supervisor));
        Assert.Equal([0x11027UL, 0x12027, 0x13027, 0x15067], new[] { Word(0x10000), Word(0x11000), Word(0x12000), Word(0x13028) });
        // Every L2 table page and the data page now has a shadow leaf: the same access hits all the way.
        Assert.Equal(translated with { Faulted = false }, vm.L2GvaAccess(Gva, AccessType.Write, Privilege.Supervisor));
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.Translated, 0x13028, 0x13028, 0x1013028), vm.L2Access(0x13028, AccessType.Read));
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void With_EPT_AD_the_reads_of_L2s_tables_are_writes_to_L1s_EPT_and_set_D_on_their_leaves()
    {
        Setup(EptpAD);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2GvaAccess(Gva, AccessType.Read, Privilege.Supervisor).Kind);
        Assert.Equal(0x10000 | EptLeaf | EptA | EptD, Word(0x4080));
        Assert.Equal(0x13000 | EptLeaf | EptA | EptD, Word(0x4098));
        Assert.Equal(0x15000 | EptLeaf | EptA, Word(0x40A8));
    }

    [Fact]
    public void A_read_only_EPT_mapping_of_an_L2_table_exits_under_EPT_AD_with_read_write_and_bit_7_but_not_bit_8()
    {
        Setup(EptpAD, pdptPageEpt: 1 | 6 << 3, l2Pdpte: 0x12027);
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, 0x11000, Qualification: 0x8B, Faulted: true, Gla: Gva),
            vm.L2GvaAccess(Gva, AccessType.Read, Privilege.Supervisor));
        Assert.Equal(0x11007UL, Word(0x10000));
    }

    [Fact]
    public void Without_EPT_AD_the_same_read_only_mapping_serves_the_read_and_an_L2_AD_write_there_exits_as_read_write()
    {
        Setup(pdptPageEpt: 1 | 6 << 3);
        // L2's PDPTE has A clear: reading it is allowed, writing its A bit is a write to a paging-structure entry.
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, 0x11000, Qualification: 0x8B, Faulted: true, Gla: Gva),
            vm.L2GvaAccess(Gva, AccessType.Read, Privilege.Supervisor));
        Assert.Equal(0x11027UL, Word(0x10000));   // the A bit before it stays
    }

    [Fact]
    public void A_violation_on_the_final_access_sets_bits_7_and_8()
    {
        Setup(dataEpt: 0);
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.EptViolation, 0x15123, Qualification: 0x184, Faulted: true, Gla: Gva),
            vm.L2GvaAccess(Gva, AccessType.Fetch, Privilege.Supervisor));
    }

    [Fact]
    public void A_final_gpa_outside_L1s_memory_exits_to_userspace_after_L2s_A_bits_are_set()
    {
        Setup(dataEpt: 0x10_0000 | EptLeaf);
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.MmioExit, 0x15123, 0x100123, Faulted: true), vm.L2GvaAccess(Gva, AccessType.Read, Privilege.Supervisor));
        Assert.Equal(0x15027UL, Word(0x13028));
    }

    [Fact]
    public void L2s_own_faults_and_refused_VM_entries()
    {
        Setup(l2Pte: 0x15006);
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.L2PageFault, Gla: Gva, ErrorCode: PageFaultErrorCode.Write | PageFaultErrorCode.User),
            vm.L2GvaAccess(Gva, AccessType.Write, Privilege.User));
        Assert.Equal(NestedOutcomeKind.L2GeneralProtection, vm.L2GvaAccess(0x8000_0000_0000, AccessType.Read, Privilege.User).Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.SetL2Paging(true, Long4, 0x10000 | 1UL << 62, new ulong[4]).Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.SetL2Paging(true, Long4 with { Mode = PagingMode.Pae }, 0x10000, [0x11001 | 1 << 5, 0, 0, 0]).Kind);
        // Paging off: the gva is the gpa.
        Assert.Equal(NestedOutcomeKind.Ok, vm.SetL2Paging(false, default, 0, new ulong[4]).Kind);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2GvaAccess(0x15123, AccessType.Read, Privilege.User).Kind);
    }

    [Fact]
    public void A_warm_gva_access_allocates_nothing()
    {
        Setup(EptpAD);
        vm.L2GvaAccess(Gva, AccessType.Write, Privilege.User);
        int faulted = 0;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
            faulted += vm.L2GvaAccess(Gva + (ulong)(i & 0xF) * 8, AccessType.Write, Privilege.User).Faulted ? 1 : 0;
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, faulted);   // every level of both dimensions hits the shadow EPT
        Assert.Equal(0, allocated);
    }

    public void Dispose()
    {
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
