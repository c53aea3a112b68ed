using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>Known answers for aging in the spec's TDP model (docs/tdp-model.md, "Aging"), written by hand.</summary>
public sealed class TdpAgingModelTests
{
    // 512 pages at gfn 0x200 backed by 4 KiB host pages: every fault maps one 4 KiB leaf.
    static readonly TdpOp Slot = new TdpOp.CreateSlot(0, 0x200, 512, 0x1000, PageSize.Size4K, ReadOnly: false);
    const ulong Gfn = 0x203, Gpa = Gfn << 12;

    static TdpState Vm(TdpFormat format, AccessedDirty ad, params TdpOp[] ops)
    {
        var s = TdpState.Create(new VmConfig(format, accessedDirty: ad));
        foreach (var op in ops.Prepend(Slot)) s = s.Step(op).State;
        return s;
    }

    static Spte.Leaf Leaf(TdpState s) => s.Leaves().Single(l => l.Leaf.Covers(Gfn)).Leaf;

    [Fact]
    public void With_EPT_AD_a_read_leaves_the_leaf_accessed_and_a_write_dirty()
    {
        var read = Vm(TdpFormat.Ept, AccessedDirty.Enabled, new TdpOp.AccessGpa(Gpa, AccessType.Read));
        Assert.True(Leaf(read).Accessed);
        Assert.False(Leaf(read).Dirty);
        var written = read.Step(new TdpOp.AccessGpa(Gpa, AccessType.Write)).State;
        Assert.True(Leaf(written).Accessed);
        Assert.True(Leaf(written).Dirty);
    }

    [Fact]
    public void Age_reports_young_clears_A_keeps_D_and_owes_no_flush_then_reports_old()
    {
        var s = Vm(TdpFormat.Ept, AccessedDirty.Enabled, new TdpOp.AccessGpa(Gpa, AccessType.Write));
        var aged = s.Step(new TdpOp.Age(0x200, 0x400));
        Assert.Equal(new TdpResult.Young(true), aged.Result);
        Assert.False(Leaf(aged.State).Accessed);
        Assert.True(Leaf(aged.State).Dirty);
        Assert.True(TdpTlb.MustFlush(s, aged.State).IsEmpty);
        Assert.Equal(new TdpResult.Young(false), aged.State.Step(new TdpOp.Age(0x200, 0x400)).Result);
        // The next access sets A again without a fault: the hardware does it.
        var again = aged.State.Step(new TdpOp.AccessGpa(Gpa, AccessType.Read));
        Assert.Equal(new TdpResult.Mapped((0x1003UL << 12), PageSize.Size4K, Faulted: false), again.Result);
        Assert.True(Leaf(again.State).Accessed);
    }

    [Fact]
    public void TestAge_reports_without_changing_anything_and_a_range_beside_the_leaf_is_old()
    {
        var s = Vm(TdpFormat.Ept, AccessedDirty.Enabled, new TdpOp.AccessGpa(Gpa, AccessType.Read));
        var tested = s.Step(new TdpOp.TestAge(Gfn, Gfn + 1));
        Assert.Equal(new TdpResult.Young(true), tested.Result);
        Assert.Same(s, tested.State);
        Assert.Equal(new TdpResult.Young(false), s.Step(new TdpOp.TestAge(Gfn + 1, Gfn + 2)).Result);
        Assert.Equal(new TdpResult.Young(false), s.Step(new TdpOp.Age(Gfn + 1, Gfn + 2)).Result);
    }

    [Fact]
    public void A_prefaulted_EPT_leaf_is_old_with_AD_and_young_without()
    {
        var with = Vm(TdpFormat.Ept, AccessedDirty.Enabled, new TdpOp.PreFault(Gpa, 0x1000));
        Assert.False(Leaf(with).Accessed);
        Assert.Equal(new TdpResult.Young(false), with.Step(new TdpOp.TestAge(0, 0x1000)).Result);
        var without = Vm(TdpFormat.Ept, AccessedDirty.Disabled, new TdpOp.PreFault(Gpa, 0x1000));
        Assert.True(Leaf(without).Accessed);
        var stage2 = Vm(TdpFormat.Stage2, AccessedDirty.Enabled, new TdpOp.PreFault(Gpa, 0x1000));
        Assert.True(Leaf(stage2).Accessed);
    }

    [Fact]
    public void Without_EPT_AD_age_zaps_owes_a_flush_and_the_next_access_faults()
    {
        var s = Vm(TdpFormat.Ept, AccessedDirty.Disabled, new TdpOp.AccessGpa(Gpa, AccessType.Write));
        Assert.False(Leaf(s).Dirty);   // no D without EPT A/D
        var aged = s.Step(new TdpOp.Age(Gfn, Gfn + 1));
        Assert.Equal(new TdpResult.Young(true), aged.Result);
        Assert.Empty(aged.State.Leaves());
        Assert.Equal(GfnRange.OfCount(Gfn, 1), Assert.Single(TdpTlb.MustFlush(s, aged.State).Duties).Gfns);
        Assert.Equal(new TdpResult.Mapped(0x1003UL << 12, PageSize.Size4K, Faulted: true),
            aged.State.Step(new TdpOp.AccessGpa(Gpa, AccessType.Read)).Result);
    }

    [Fact]
    public void Stage2_without_hardware_AF_ages_by_clearing_AF_and_the_next_access_takes_an_access_flag_fault()
    {
        var s = Vm(TdpFormat.Stage2, AccessedDirty.Disabled, new TdpOp.AccessGpa(Gpa, AccessType.Write));
        Assert.False(Leaf(s).Dirty);   // stage-2 keeps no dirty state
        var aged = s.Step(new TdpOp.Age(Gfn, Gfn + 1));
        Assert.Equal(new TdpResult.Young(true), aged.Result);
        Assert.False(Leaf(aged.State).Accessed);
        Assert.True(TdpTlb.MustFlush(s, aged.State).IsEmpty);
        var fault = aged.State.Step(new TdpOp.AccessGpa(Gpa, AccessType.Read));
        Assert.Equal(new TdpResult.Mapped(0x1003UL << 12, PageSize.Size4K, Faulted: true), fault.Result);
        Assert.True(Leaf(fault.State).Accessed);
        Assert.Equal(new TdpResult.Mapped(0x1003UL << 12, PageSize.Size4K, Faulted: false),
            fault.State.Step(new TdpOp.AccessGpa(Gpa, AccessType.Read)).Result);
    }

    [Fact]
    public void Aging_is_rejected_when_the_VM_does_not_track_accessed_state_or_the_range_is_empty()
    {
        var untracked = Vm(TdpFormat.Ept, AccessedDirty.Untracked, new TdpOp.AccessGpa(Gpa, AccessType.Read));
        Assert.IsType<VmResult.Rejected>(untracked.Step(new TdpOp.Age(0, 0x400)).Result);
        Assert.IsType<VmResult.Rejected>(untracked.Step(new TdpOp.TestAge(0, 0x400)).Result);
        Assert.False(Leaf(untracked).Accessed);   // untracked leaves carry nothing: the other properties compare as before
        var tracked = Vm(TdpFormat.Ept, AccessedDirty.Enabled);
        Assert.IsType<VmResult.Rejected>(tracked.Step(new TdpOp.Age(5, 5)).Result);
        Assert.IsType<VmResult.Rejected>(tracked.Step(new TdpOp.TestAge(0, (1UL << 36) + 1)).Result);
    }
}
