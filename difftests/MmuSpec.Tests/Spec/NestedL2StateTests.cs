using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for L2's own paging in the nested VM (<see cref="NestedEptState"/>: SetL2Paging, L2GvaAccess answered by
/// NestedWalk), every value a literal from the SDM (Vol. 3C §29.3.3.3, §29.3.4, the exit-qualification table; Vol. 3A §4.8).
///
/// L1 RAM: gfns 0..0x3f on host frames 0x1000... L1's EPT (EPTP 0x101e; 0x105e with A/D): PML4E @ 0x1000 -> 0x2000,
/// PDPTE @ 0x2000 -> 0x3000, PDE @ 0x3000 -> PT 0x4000; EPT PTE @ 0x4000 + 8n maps L2 gpa n*0x1000 to L1 n*0x1000 for
/// n = 0x10..0x13 (L2's tables) and 0x15 (L2's data page). L2 runs 4-level paging, CR3 0x10000: PML4E @ 0x10000 -> 0x11000,
/// PDPTE @ 0x11000 -> 0x12000, PDE @ 0x12000 -> 0x13000, PTE @ 0x13028 -> 0x15000, all P|W|U with A clear; so gva 0x5123
/// -> L2 gpa 0x15123 -> L1 gpa 0x15123 -> hpa 0x1015123.
/// </summary>
public sealed class NestedL2StateTests
{
    const ulong Eptp = 0x101E, EptpAD = 0x105E, EptLeaf = 7 | 6 << 3, Gva = 0x5123;
    const ulong EptA = 1 << 8, EptD = 1 << 9, L2A = 1 << 5, L2D = 1 << 6;
    static readonly CpuState Long4 = new(new PagingControls(PagingMode.Long4), 0x10000);

    internal static NestedEptState Vm(ulong eptp = Eptp, ulong pdptPageEpt = EptLeaf, ulong dataEpt = EptLeaf, ulong l2Pdpte = 0x12007, ulong l2Pte = 0x15007)
    {
        var s = NestedEptState.Create(EptCapabilities.Default);
        s = Ok(s, new NestedEptOp.CreateSlot(0, 0, 0x40, 0x1000));
        foreach (var (gpa, value) in new (ulong, ulong)[]
        {
            (0x1000, 0x2007), (0x2000, 0x3007), (0x3000, 0x4007),
            (0x4080, 0x10000 | EptLeaf), (0x4088, 0x11000 | pdptPageEpt), (0x4090, 0x12000 | EptLeaf), (0x4098, 0x13000 | EptLeaf),
            (0x40A8, 0x15000 | dataEpt),
            (0x10000, 0x11007), (0x11000, l2Pdpte), (0x12000, 0x13007), (0x13028, l2Pte),
        })
            s = Ok(s, new NestedEptOp.L1Store(gpa, value, 8));
        s = Ok(s, new NestedEptOp.LoadEptp(new EptPointer(eptp)));
        return Ok(s, new NestedEptOp.SetL2Paging(Long4));
    }

    static NestedEptState Ok(NestedEptState s, NestedEptOp op)
    {
        var (next, result) = s.Step(op);
        Assert.Equal(VmResult.Ok.Instance, result);
        return next;
    }

    static ulong Word(NestedEptState s, ulong gpa) => s.L1Memory.Read64(gpa)!.Value;

    [Fact]
    public void A_gva_access_goes_through_L2s_tables_and_sets_their_A_bits_and_D_in_a_writes_leaf()
    {
        var (after, result) = Vm().Step(new NestedEptOp.L2GvaAccess(Access.Write(Gva)));
        Assert.Equal(new NestedEptResult.Translated(0x15123, 0x15123, 0x1015123), result);
        Assert.Equal([0x11027UL, 0x12027, 0x13027, 0x15067], new[] { Word(after, 0x10000), Word(after, 0x11000), Word(after, 0x12000), Word(after, 0x13028) });
        Assert.Equal(0x10000 | EptLeaf, Word(after, 0x4080));   // EPT A/D off: L1's EPT untouched
    }

    [Fact]
    public void With_EPT_AD_the_reads_of_L2s_tables_set_EPT_D_on_their_leaves_and_the_data_read_only_A()
    {
        var (after, result) = Vm(EptpAD).Step(new NestedEptOp.L2GvaAccess(Access.Read(Gva)));
        Assert.Equal(new NestedEptResult.Translated(0x15123, 0x15123, 0x1015123), result);
        Assert.Equal([0x2007 | EptA, 0x3007 | EptA, 0x4007 | EptA], new[] { Word(after, 0x1000), Word(after, 0x2000), Word(after, 0x3000) });
        Assert.Equal(0x10000 | EptLeaf | EptA | EptD, Word(after, 0x4080));
        Assert.Equal(0x13000 | EptLeaf | EptA | EptD, Word(after, 0x4098));
        Assert.Equal(0x15000 | EptLeaf | EptA, Word(after, 0x40A8));
    }

    [Fact]
    public void A_read_only_EPT_mapping_of_an_L2_table_exits_under_EPT_AD_with_read_write_and_bit_7_but_not_bit_8()
    {
        // The PDPT page's EPT leaf is R only; L2's PDPTE already has A, so without EPT A/D nothing writes it.
        var plain = Vm(pdptPageEpt: 1 | 6 << 3, l2Pdpte: 0x12027).Step(new NestedEptOp.L2GvaAccess(Access.Read(Gva))).Result;
        Assert.IsType<NestedEptResult.Translated>(plain);
        var (after, result) = Vm(EptpAD, pdptPageEpt: 1 | 6 << 3, l2Pdpte: 0x12027).Step(new NestedEptOp.L2GvaAccess(Access.Read(Gva)));
        Assert.Equal(new NestedEptResult.EptExit(new EptResult.Violation(new EptViolationQualification(0x8B), 0x11000, Gva)), result);
        // The PML4 read before it completed: its EPT walk keeps its A and D; L2's A bits are not written.
        Assert.Equal(0x10000 | EptLeaf | EptA | EptD, Word(after, 0x4080));
        Assert.Equal(0x11007UL, Word(after, 0x10000));
    }

    [Fact]
    public void A_violation_on_the_final_access_sets_bits_7_and_8()
    {
        var (_, result) = Vm(dataEpt: 0).Step(new NestedEptOp.L2GvaAccess(Access.Fetch(Gva)));
        Assert.Equal(new NestedEptResult.EptExit(new EptResult.Violation(new EptViolationQualification(0x184), 0x15123, Gva)), result);
    }

    [Fact]
    public void L2s_own_fault_is_delivered_to_L2_and_paging_off_makes_the_gva_the_gpa()
    {
        var (_, fault) = Vm(l2Pte: 0x15006).Step(new NestedEptOp.L2GvaAccess(Access.Write(Gva, Privilege.User)));
        Assert.Equal(new NestedEptResult.GuestFault(new WalkResult.PageFault(PageFaultErrorCode.Write | PageFaultErrorCode.User)), fault);
        var off = Ok(Vm(), new NestedEptOp.SetL2Paging(null));
        Assert.Equal(new NestedEptResult.Translated(0x15123, 0x15123, 0x1015123), off.Step(new NestedEptOp.L2GvaAccess(Access.Read(0x15123))).Result);
    }

    [Fact]
    public void VM_entry_refuses_a_CR3_beyond_MAXPHYADDR_and_a_PDPTE_field_with_a_reserved_bit()
    {
        var vm = Vm();
        Assert.IsType<VmResult.Rejected>(vm.Step(new NestedEptOp.SetL2Paging(Long4.WithCr3(0x10000 | 1UL << 62))).Result);
        var pae = new CpuState(new PagingControls(PagingMode.Pae), 0x10000, [0x11001 | 1 << 5, 0, 0, 0]);
        var (state, result) = vm.Step(new NestedEptOp.SetL2Paging(pae));
        Assert.IsType<VmResult.Rejected>(result);
        Assert.Equal(Long4, state.L2Cpu);
    }
}
