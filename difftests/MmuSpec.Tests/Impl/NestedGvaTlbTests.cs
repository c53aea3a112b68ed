using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Impl.Paging;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Known answers for the nested impl's gva TLB (impl/Nested/NestedEptMmu.GvaTlb.cs) and KVM's flushes around it, over
/// NestedL2MmuTests' layout (gva 0x5123 -> L2 gpa 0x15123 through L2's PTE at L1 0x13028, and gva 0x6123 the same way
/// through 0x13030). Retargeting a PTE to 0x16000, which L1's EPT does not map, makes a walk an EPT violation, so a
/// translation to 0x15123 afterwards comes from the TLB.
/// </summary>
public sealed class NestedGvaTlbTests : IDisposable
{
    const ulong Eptp = 0x101E, EptLeaf = 7 | 6 << 3, Gva = 0x5123, Gva2 = 0x6123, Pte = 0x13028, Pte2 = 0x13030, EptpList = 0x20000;
    static readonly PagingControls Long4 = new(PagingMode.Long4, false, false, false, false, false, false, false, 0, 46);
    static readonly NestedOutcome Stale = new(NestedOutcomeKind.Translated, 0x15123, 0x15123, 0x1015123);

    readonly NativePagePool pool = new();
    readonly INestedEptVm vm;

    public NestedGvaTlbTests()
    {
        vm = NestedEptVm.Create(46, executeOnly: true, pool, gvaTlb: true);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x40, 0x1000));
        foreach (var (gpa, value) in new (ulong, ulong)[]
        {
            (0x1000, 0x2007), (0x2000, 0x3007), (0x3000, 0x4007),
            (0x4080, 0x10000 | EptLeaf), (0x4088, 0x11000 | EptLeaf), (0x4090, 0x12000 | EptLeaf), (0x4098, 0x13000 | EptLeaf), (0x40A8, 0x15000 | EptLeaf),
            (0x10000, 0x11007), (0x11000, 0x12007), (0x12000, 0x13007), (Pte, 0x15007), (Pte2, 0x15007),
            (EptpList, 0x105E), (EptpList + 8, 0x1019),   // the same tables with EPT A/D; memory type 1, refused
        })
            Assert.Equal(NestedOutcomeKind.Ok, vm.L1Store(gpa, value, 8).Kind);
        Assert.Equal(NestedOutcomeKind.Ok, vm.LoadEptp(Eptp).Kind);
        Assert.Equal(NestedOutcomeKind.Ok, vm.SetL2Paging(true, Long4, 0x10000, new ulong[4]).Kind);
    }

    public void Dispose()
    {
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    NestedOutcome Read(ulong gva = Gva) => vm.L2GvaAccess(gva, AccessType.Read, Privilege.Supervisor);

    void Ok(NestedOutcome o) => Assert.Equal(NestedOutcomeKind.Ok, o.Kind);

    /// <summary>L2 reads the gva (filling the TLB), exits, and L1 retargets the PTE behind it.</summary>
    void ReadExitRetarget(ulong pte = Pte, ulong gva = Gva)
    {
        Assert.Equal(NestedOutcomeKind.Translated, Read(gva).Kind);
        Ok(vm.VmExit());
        Ok(vm.L1Store(pte, 0x16007, 8));
    }

    [Fact]
    public void A_filled_translation_is_served_without_a_walk_even_after_L1_retargets_L2s_leaf()
    {
        Assert.Equal(Stale with { Faulted = true }, Read());
        Ok(vm.L1Store(Pte, 0x16007, 8));
        Assert.Equal(Stale, Read());
        Assert.Equal(new NestedGvaTlbCounters(Hits: 1, Fills: 1, Flushes: 1), vm.GvaTlbCounters);   // the flush: the setup's entry with L2's paging
    }

    [Fact]
    public void The_TLB_is_off_unless_asked_for()
    {
        using var plain = NestedEptVm.Create(46, executeOnly: true, pool);
        Assert.Equal(NestedOutcomeKind.Rejected, plain.Vmfunc(0).Kind);   // no EPTP yet, and L2 does not run
        Assert.Equal(default, plain.GvaTlbCounters);
    }

    [Fact]
    public void With_VPID12_unchanged_the_exit_and_entry_keep_the_mapping()
    {
        ReadExitRetarget();
        Ok(vm.VmEntry(true, 1, false, 0));
        Assert.Equal(Stale, Read());
    }

    [Theory]
    [InlineData(InvvpidKind.SingleContext, 1)]
    [InlineData(InvvpidKind.AllContexts, 0)]
    [InlineData(InvvpidKind.SingleContextRetainingGlobals, 1)]
    [InlineData(InvvpidKind.SingleContext, 7)]   // any VPID12: KVM flushes vpid02, which L2's VPIDs share
    public void INVVPID_flushes_vpid02_so_the_next_read_walks(InvvpidKind type, ushort vpid)
    {
        ReadExitRetarget();
        Ok(vm.Invvpid(type, vpid, 0));
        Ok(vm.VmEntry(true, 1, false, 0));
        Assert.Equal(NestedOutcomeKind.EptViolation, Read().Kind);
    }

    [Fact]
    public void INVVPID_individual_address_flushes_its_page_only()
    {
        Assert.Equal(NestedOutcomeKind.Translated, Read(Gva2).Kind);
        ReadExitRetarget();
        Ok(vm.L1Store(Pte2, 0x16007, 8));
        Ok(vm.Invvpid(InvvpidKind.IndividualAddress, 1, 0x5FFF));
        Ok(vm.VmEntry(true, 1, false, 0));
        Assert.Equal(NestedOutcomeKind.EptViolation, Read().Kind);
        Assert.Equal(Stale with { Gpa = 0x15123, L1Gpa = 0x15123 }, Read(Gva2));
    }

    [Fact]
    public void INVVPID_is_refused_while_L2_runs_and_with_VPID_0_for_types_0_1_and_3()
    {
        Assert.Equal(NestedOutcomeKind.Rejected, vm.Invvpid(InvvpidKind.AllContexts, 0, 0).Kind);
        Ok(vm.VmExit());
        foreach (var type in new[] { InvvpidKind.IndividualAddress, InvvpidKind.SingleContext, InvvpidKind.SingleContextRetainingGlobals })
            Assert.Equal(NestedOutcomeKind.Rejected, vm.Invvpid(type, 0, Gva).Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.VmExit().Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.VmEntry(true, 0, false, 0).Kind);
        Assert.Equal(NestedOutcomeKind.Rejected, vm.VmEntry(true, 1, true, EptpList + 8).Kind);
    }

    [Fact]
    public void Without_VPID_for_L2_every_entry_and_exit_flushes_vpid01()
    {
        Ok(vm.VmExit());
        Ok(vm.VmEntry(false, 0, false, 0));
        ReadExitRetarget();   // the exit flushes
        Ok(vm.VmEntry(false, 0, false, 0));
        Assert.Equal(NestedOutcomeKind.EptViolation, Read().Kind);
        Ok(vm.L1Store(Pte, 0x15007, 8));
        Assert.Equal(NestedOutcomeKind.Translated, Read().Kind);
        Ok(vm.L1Store(Pte, 0x16007, 8));
        Ok(vm.VmEntry(false, 0, false, 0));   // an entry alone flushes too
        Assert.Equal(NestedOutcomeKind.EptViolation, Read().Kind);
    }

    [Fact]
    public void A_new_VPID12_at_entry_flushes_vpid02_and_the_old_one_does_not_come_back()
    {
        ReadExitRetarget();
        Ok(vm.VmEntry(true, 2, false, 0));
        Assert.Equal(NestedOutcomeKind.EptViolation, Read().Kind);
    }

    [Fact]
    public void INVEPT_of_the_EPTP_flushes_its_combined_mappings()
    {
        ReadExitRetarget();
        Ok(vm.Invept(InveptKind.SingleContext, Eptp));
        Ok(vm.VmEntry(true, 1, false, 0));
        Assert.Equal(NestedOutcomeKind.EptViolation, Read().Kind);
    }

    [Fact]
    public void A_write_through_a_mapping_filled_by_a_read_walks_to_set_D()
    {
        Assert.Equal(NestedOutcomeKind.Translated, Read().Kind);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2GvaAccess(Gva, AccessType.Write, Privilege.Supervisor).Kind);
        Assert.Equal(new NestedGvaTlbCounters(Hits: 0, Fills: 2, Flushes: 1), vm.GvaTlbCounters);
        Assert.Equal(NestedOutcomeKind.Translated, vm.L2GvaAccess(Gva, AccessType.Write, Privilege.Supervisor).Kind);
        Assert.Equal(1, vm.GvaTlbCounters.Hits);
    }

    [Fact]
    public void VMFUNC_switches_to_a_listed_EPTP_and_otherwise_exits_to_L1()
    {
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.VmfuncExit, Gpa: 0), vm.Vmfunc(0));   // EPTP switching off
        Assert.Equal(NestedOutcomeKind.Rejected, vm.Vmfunc(0).Kind);                           // the exit left L1 running
        Ok(vm.VmEntry(true, 1, true, EptpList));
        Assert.Equal(NestedOutcomeKind.Translated, Read().Kind);
        Ok(vm.Vmfunc(0));
        Assert.Equal(NestedOutcomeKind.Translated, Read().Kind);
        Assert.Equal([0x105EUL, Eptp], vm.CachedRootEptps());
        Ok(vm.Vmfunc(0));   // the same EPTP: nothing to switch
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.VmfuncExit, Gpa: 1), vm.Vmfunc(1));
        Ok(vm.VmEntry(true, 1, true, EptpList));
        Assert.Equal(new NestedOutcome(NestedOutcomeKind.VmfuncExit, Gpa: 512), vm.Vmfunc(512));
        Assert.Equal([0x105EUL, Eptp], vm.CachedRootEptps());
        Assert.Empty(vm.InvariantProblems());
    }

    [Fact]
    public void A_TLB_hit_allocates_nothing()
    {
        Assert.Equal(NestedOutcomeKind.Translated, Read().Kind);
        Read();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
            Read();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(1001, vm.GvaTlbCounters.Hits);
    }
}
