using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for VPIDs, VM entries and exits, INVVPID and VMFUNC EPTP switching in the nested VM
/// (NestedEptState.Vpid.cs) and for the combined-mapping allowance of oracle 2 (NestedEptMachine.Vpid.cs), over
/// NestedL2StateTests' layout: gva 0x5123 -> L2 gpa 0x15123 through L2's PTE at L1 0x13028; retargeting that PTE to
/// 0x16000 (which L1's EPT does not map) makes the walk now an EPT violation, so a translation to 0x15123 is stale.
/// </summary>
public sealed class NestedVpidStateTests
{
    const ulong Gva = 0x5123, Pte = 0x13028, EptpList = 0x20000;
    static readonly NestedEptOp.L2GvaAccess Read = new(Access.Read(Gva)), Write = new(Access.Write(Gva));
    static readonly NestedEptResult.Translated Stale = new(0x15123, 0x15123, 0x1015123);

    static NestedEptMachine Machine(bool globals = false)
    {
        var m = NestedEptMachine.Create(EptCapabilities.Default, globals);
        foreach (var op in Replay()) m = Ok(m, op);
        return m;
    }

    // NestedL2StateTests.Vm's ops, replayed through the machine so the layer sees them.
    static IEnumerable<NestedEptOp> Replay()
    {
        var vm = NestedL2StateTests.Vm();
        yield return new NestedEptOp.CreateSlot(0, 0, 0x40, 0x1000);
        foreach (var gpa in new ulong[] { 0x1000, 0x2000, 0x3000, 0x4080, 0x4088, 0x4090, 0x4098, 0x40A8, 0x10000, 0x11000, 0x12000, Pte })
            yield return new NestedEptOp.L1Store(gpa, vm.L1Memory.Read64(gpa)!.Value, 8);
        yield return new NestedEptOp.LoadEptp(vm.Eptp!.Value);
        yield return new NestedEptOp.SetL2Paging(vm.L2Cpu);
    }

    static NestedEptMachine Ok(NestedEptMachine m, NestedEptOp op)
    {
        var (next, result) = m.Step(op);
        Assert.False(result is VmResult.Rejected, $"{op}: {result}");
        return next;
    }

    static VmResult Result(NestedEptMachine m, NestedEptOp op) => m.Step(op).Result;

    /// <summary>L2 reads the gva (a combined mapping may be cached), exits, and L1 retargets L2's PTE.</summary>
    static NestedEptMachine ReadExitRetarget(NestedEptMachine m)
    {
        m = Ok(m, Read);
        m = Ok(m, new NestedEptOp.VmExit());
        return Ok(m, new NestedEptOp.L1Store(Pte, 0x16007, 8));
    }

    [Fact]
    public void VM_entry_with_enable_VPID_and_VPID_0_or_a_bad_EPTP_list_address_is_refused_and_L1_stays()
    {
        var m = Ok(Machine(), new NestedEptOp.VmExit());
        Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.VmEntry(true, 0, null)));
        Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.VmEntry(true, 1, EptpList | 8)));
        Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.VmEntry(true, 1, 1UL << 52)));
        Assert.False(m.Step(new NestedEptOp.VmEntry(true, 0, null)).Next.State.Vpid.InL2);
        Assert.Equal(new VpidContext(true, false, 0, EptpList), Ok(m, new NestedEptOp.VmEntry(false, 0, EptpList)).State.Vpid);
    }

    [Fact]
    public void INVVPID_is_refused_while_L2_runs_and_with_VPID_0_except_all_contexts()
    {
        var m = Machine();
        Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.Invvpid(InvvpidType.SingleContext, 1, 0)));
        Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.Invvpid(InvvpidType.AllContexts, 0, 0)));
        m = Ok(m, new NestedEptOp.VmExit());
        foreach (var t in new[] { InvvpidType.IndividualAddress, InvvpidType.SingleContext, InvvpidType.SingleContextRetainingGlobals })
            Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.Invvpid(t, 0, Gva)));
        Assert.Equal(VmResult.Ok.Instance, Result(m, new NestedEptOp.Invvpid(InvvpidType.AllContexts, 0, 0)));
        Assert.IsType<VmResult.Rejected>(Result(m, new NestedEptOp.VmExit()));   // L1 already runs
    }

    [Fact]
    public void VMFUNC_switches_to_a_valid_listed_EPTP_and_exits_to_L1_without_the_list_on_index_512_or_a_refused_EPTP()
    {
        var m = Ok(Machine(), new NestedEptOp.L1Store(EptpList, 0x105E, 8));       // the same tables with EPT A/D
        m = Ok(m, new NestedEptOp.L1Store(EptpList + 8, 0x1019, 8));               // memory type 1: refused
        Assert.Equal(new NestedEptResult.VmfuncExit(0), Result(m, new NestedEptOp.Vmfunc(0)));   // EPTP switching off
        m = Ok(Ok(m, new NestedEptOp.VmExit()), new NestedEptOp.VmEntry(true, 1, EptpList));
        var (switched, r) = m.Step(new NestedEptOp.Vmfunc(0));
        Assert.Equal(VmResult.Ok.Instance, r);
        Assert.Equal(new EptPointer(0x105E), switched.State.Eptp);
        Assert.Equal(new EptPointer(0x105E), switched.Tlb!.Eptp);
        Assert.True(switched.State.Vpid.InL2);
        foreach (uint index in new uint[] { 1, 2, 512 })
        {
            var (exited, e) = m.Step(new NestedEptOp.Vmfunc(index));
            Assert.Equal(new NestedEptResult.VmfuncExit(index), e);
            Assert.Equal(new EptPointer(0x101E), exited.State.Eptp);
            Assert.False(exited.State.Vpid.InL2);
            Assert.IsType<VmResult.Rejected>(Result(exited, new NestedEptOp.Vmfunc(0)));   // L2 no longer runs
        }
    }

    [Fact]
    public void With_VPID_a_combined_mapping_survives_the_exit_the_store_and_the_entry_so_the_stale_translation_is_allowed()
    {
        var m = Ok(ReadExitRetarget(Machine()), new NestedEptOp.VmEntry(true, 1, null));
        Assert.IsType<NestedEptResult.EptExit>(Result(m, Read));   // the walk now
        Assert.NotNull(m.ServedFromCombined(Read, Stale, out string why));
        Assert.Contains("combined mapping", why);
        Assert.Null(m.ServedFromCombined(Read, new NestedEptResult.Translated(0x17123, 0x17123, 0x1017123), out _));
    }

    [Theory]
    [InlineData(InvvpidType.IndividualAddress)]
    [InlineData(InvvpidType.SingleContext)]
    [InlineData(InvvpidType.AllContexts)]
    [InlineData(InvvpidType.SingleContextRetainingGlobals)]
    public void INVVPID_of_each_type_for_the_VPID_forbids_the_stale_translation(InvvpidType type)
    {
        var m = Ok(ReadExitRetarget(Machine()), new NestedEptOp.Invvpid(type, 1, Gva));
        m = Ok(m, new NestedEptOp.VmEntry(true, 1, null));
        Assert.Null(m.ServedFromCombined(Read, Stale, out string why));
        Assert.Contains("not what L2's tables", why);
    }

    [Fact]
    public void INVVPID_of_another_VPID_or_another_page_leaves_the_mapping()
    {
        var m = Ok(ReadExitRetarget(Machine()), new NestedEptOp.Invvpid(InvvpidType.SingleContext, 2, 0));
        m = Ok(m, new NestedEptOp.Invvpid(InvvpidType.IndividualAddress, 1, 0x6000));
        Assert.NotNull(Ok(m, new NestedEptOp.VmEntry(true, 1, null)).ServedFromCombined(Read, Stale, out _));
    }

    [Fact]
    public void Retaining_globals_keeps_a_global_mapping_only_under_CR4_PGE_with_G_in_the_leaf()
    {
        NestedEptMachine Run(bool pge, ulong pte)
        {
            var m = Ok(Machine(pge), new NestedEptOp.L1Store(Pte, pte, 8));
            m = Ok(m, Read);
            m = Ok(Ok(m, new NestedEptOp.VmExit()), new NestedEptOp.L1Store(Pte, 0x16007, 8));
            m = Ok(m, new NestedEptOp.Invvpid(InvvpidType.SingleContextRetainingGlobals, 1, 0));
            return Ok(m, new NestedEptOp.VmEntry(true, 1, null));
        }
        Assert.NotNull(Run(pge: true, 0x15107).ServedFromCombined(Read, Stale, out _));
        Assert.Null(Run(pge: false, 0x15107).ServedFromCombined(Read, Stale, out _));
        Assert.Null(Run(pge: true, 0x15007).ServedFromCombined(Read, Stale, out _));
    }

    [Fact]
    public void Without_VPID_the_exit_and_the_entry_flush_VPID_0_so_nothing_stale_is_allowed()
    {
        var m = Ok(Ok(Machine(), new NestedEptOp.VmExit()), new NestedEptOp.VmEntry(false, 0, null));
        m = Ok(ReadExitRetarget(m), new NestedEptOp.VmEntry(false, 0, null));
        Assert.Null(m.ServedFromCombined(Read, Stale, out _));
    }

    [Fact]
    public void A_write_is_served_only_by_a_mapping_cached_while_dirty()
    {
        var clean = Ok(ReadExitRetarget(Machine()), new NestedEptOp.VmEntry(true, 1, null));
        Assert.Null(clean.ServedFromCombined(Write, Stale, out string why));
        Assert.Contains("dirty", why);
        var m = Ok(Machine(), Write);
        m = Ok(Ok(m, new NestedEptOp.VmExit()), new NestedEptOp.L1Store(Pte, 0x16007, 8));
        Assert.NotNull(Ok(m, new NestedEptOp.VmEntry(true, 1, null)).ServedFromCombined(Write, Stale, out _));
    }
}
