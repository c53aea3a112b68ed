using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the model's pre-fault (KVM_PRE_FAULT_MEMORY, docs/tdp-model.md "Pre-faulting a
/// range"): what it maps and what it returns, written by hand.
/// </summary>
public sealed class TdpPreFaultModelTests
{
    static readonly VmConfig Ept = new(TdpFormat.Ept);

    static TdpState Run(TdpState s, params TdpOp[] ops)
    {
        foreach (var op in ops) s = s.Step(op).State;
        return s;
    }

    // 4 MiB at gfn 0x200 (gpa 0x20_0000), 2 MiB host pages, equally aligned: 2 MiB leaves fit.
    static readonly TdpOp Slot = new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1200, PageSize.Size2M, ReadOnly: false);

    static List<Spte.Leaf> Leaves(TdpState s) => s.Leaves().Select(l => l.Leaf).OrderBy(l => l.Gfn).ToList();

    [Fact]
    public void A_range_inside_a_slot_maps_as_read_faults_would_and_returns_its_size()
    {
        var s = Run(TdpState.Create(Ept), Slot);
        var r = s.Step(new TdpOp.PreFault(0x20_0000, 0x40_0000));
        Assert.Equal(new TdpResult.Populated(0x40_0000), r.Result);
        // Two 2 MiB leaves, read-only-free: a read fault in a writable slot that does not log maps writable.
        Assert.Equal([new Spte.Leaf(0x200, 2, 0x1200, true), new Spte.Leaf(0x400, 2, 0x1400, true)], Leaves(r.State));
    }

    [Fact]
    public void A_range_ending_inside_a_huge_leaf_maps_the_whole_leaf_but_reports_only_the_range()
    {
        var s = Run(TdpState.Create(Ept), Slot);
        var r = s.Step(new TdpOp.PreFault(0x20_0000, 0x1000));
        Assert.Equal(new TdpResult.Populated(0x1000), r.Result);
        Assert.Equal([new Spte.Leaf(0x200, 2, 0x1200, true)], Leaves(r.State));
    }

    [Fact]
    public void A_range_that_leaves_the_memslots_stops_there_with_partial_progress()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.SetMaxPageSize(PageSize.Size4K));
        // Two pages before the slot's end, eight asked for: two mapped.
        var r = s.Step(new TdpOp.PreFault(0x5FE000, 0x8000));
        Assert.Equal(new TdpResult.Populated(0x2000), r.Result);
        Assert.Equal([0x5FEUL, 0x5FFUL], Leaves(r.State).Select(l => l.Gfn));
    }

    [Fact]
    public void A_range_starting_outside_every_memslot_maps_nothing_and_exits()
    {
        var s = Run(TdpState.Create(Ept), Slot);
        var r = s.Step(new TdpOp.PreFault(0x1F_F000, 0x2000));
        Assert.Equal(new TdpResult.MmioExit(0x1F_F000), r.Result);
        Assert.Same(s, r.State);
        Assert.Equal(new TdpResult.MmioExit(1UL << 48), s.Step(new TdpOp.PreFault(1UL << 48, 0x1000)).Result);
    }

    [Theory]
    [InlineData(0x20_0000UL, 0UL)]
    [InlineData(0x20_0800UL, 0x1000UL)]
    [InlineData(0x20_0000UL, 0x1800UL)]
    [InlineData(0xFFFF_FFFF_FFFF_F000UL, 0x2000UL)]
    public void An_empty_unaligned_or_wrapping_range_is_rejected(ulong gpa, ulong size)
    {
        var s = Run(TdpState.Create(Ept), Slot);
        var r = s.Step(new TdpOp.PreFault(gpa, size));
        Assert.IsType<VmResult.Rejected>(r.Result);
        Assert.Same(s, r.State);
    }

    [Fact]
    public void A_read_only_slot_is_mapped_read_only_and_a_logging_slot_4KiB_read_only_with_nothing_dirty()
    {
        var ro = Run(TdpState.Create(Ept), new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1200, PageSize.Size2M, ReadOnly: true));
        var r = ro.Step(new TdpOp.PreFault(0x20_0000, 0x20_0000));
        Assert.Equal(new TdpResult.Populated(0x20_0000), r.Result);
        Assert.Equal([new Spte.Leaf(0x200, 2, 0x1200, false)], Leaves(r.State));

        var logging = Run(TdpState.Create(Ept), Slot, new TdpOp.SetDirtyLogging(0, true));
        var l = logging.Step(new TdpOp.PreFault(0x20_0000, 0x3000));
        Assert.Equal(new TdpResult.Populated(0x3000), l.Result);
        Assert.All(Leaves(l.State), leaf => Assert.Equal((1, false), (leaf.Level, leaf.Writable)));
        Assert.Equal(3, Leaves(l.State).Count);
        Assert.Empty(l.State.DirtyBitmaps[0]);
    }

    [Fact]
    public void A_hit_steps_over_the_existing_leaf_and_a_huge_leaf_replaces_a_table_of_4KiB_leaves()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.SetMaxPageSize(PageSize.Size4K),
            new TdpOp.AccessGpa(0x40_1000, AccessType.Write), new TdpOp.SetMaxPageSize(PageSize.Size1G));
        var r = s.Step(new TdpOp.PreFault(0x20_0000, 0x40_0000));
        Assert.Equal(new TdpResult.Populated(0x40_0000), r.Result);
        // The written 4 KiB leaf's table gave way to a 2 MiB leaf, as a read fault there would do.
        Assert.Equal([new Spte.Leaf(0x200, 2, 0x1200, true), new Spte.Leaf(0x400, 2, 0x1400, true)], Leaves(r.State));
        Assert.Equal(r.State, Run(s, new TdpOp.AccessGpa(0x20_0000, AccessType.Read), new TdpOp.AccessGpa(0x40_0000, AccessType.Read)));
    }

    [Fact]
    public void The_shared_bit_picks_the_root_as_for_an_access()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept, 47)), Slot);
        var shared = s.Step(new TdpOp.PreFault((1UL << 47) | 0x20_0000, 0x1000)).State;
        Assert.NotNull(shared.DirectRoot);
        Assert.Null(shared.MirrorRoot);
        var priv = s.Step(new TdpOp.PreFault(0x20_0000, 0x1000)).State;
        Assert.Null(priv.DirectRoot);
        Assert.NotNull(priv.MirrorRoot);
    }
}
