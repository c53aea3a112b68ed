using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using static MmuSpec.Tests.TdpSteps;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the model's MMU notifiers (docs/tdp-model.md, "MMU notifiers"), written by hand from
/// KVM's rules: Start zaps and counts, a fault in the retry range retries and changes nothing, End moves the
/// range's host pages to their other frame and bumps the sequence, an End without its Start is refused.
/// </summary>
public sealed class TdpNotifierModelTests
{
    static readonly VmConfig Ept = new(TdpFormat.Ept);
    const ulong Moved = TdpState.MigratedFrameBit;

    // 4 MiB at gfn 0x200, 2 MiB host pages, equally aligned: 2 MiB leaves fit.
    static readonly TdpOp Slot = new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1200, PageSize.Size2M, ReadOnly: false);


    static List<Spte.Leaf> Leaves(TdpState s) => s.Leaves().Select(l => l.Leaf).OrderBy(l => l.Gfn).ToList();

    [Fact]
    public void Start_zaps_the_huge_leaf_a_fault_inside_retries_and_one_beside_maps_4K_clear_of_the_range()
    {
        var s = Run(TdpState.Create(Ept), Slot, Read(0x200));
        Assert.Equal([new Spte.Leaf(0x200, 2, 0x1200, true)], Leaves(s));
        var started = s.Step(new TdpOp.HostInvalidateStart(0x210, 0x211));
        Assert.Equal(VmResult.Ok.Instance, started.Result);
        Assert.Empty(Leaves(started.State));
        // The zap owes the flush of the whole 2 MiB leaf.
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x400)), TdpTlb.MustFlush(s, started.State).Gfns);
        s = started.State;
        Assert.Equal(new HostNotifierState([new GfnRange(0x210, 0x211)], new GfnRange(0x210, 0x211), 0, GfnRanges.Empty), s.Notifier);

        var retried = s.Step(Read(0x210));
        Assert.Equal(new TdpResult.Retry(), retried.Result);
        Assert.Same(s, retried.State);
        // Beside the range, in the same 2 MiB: a huge leaf would reach into it, so 4 KiB.
        var beside = s.Step(Read(0x211));
        Assert.Equal(new TdpResult.Mapped(0x1211000, PageSize.Size4K, Faulted: true), beside.Result);
        // Another 2 MiB region of the slot is untouched by it: huge.
        Assert.Equal(new TdpResult.Mapped(0x1400000, PageSize.Size2M, Faulted: true), beside.State.Step(Read(0x400)).Result);
    }

    [Fact]
    public void End_moves_the_pages_and_bumps_the_sequence_so_the_next_fault_maps_the_other_frame()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.HostInvalidateStart(0x210, 0x212), new TdpOp.HostInvalidateEnd(0x210, 0x212));
        Assert.Equal(new HostNotifierState([], default, 1, GfnRanges.Of(new GfnRange(0x1210, 0x1212))), s.Notifier);
        var moved = s.Step(new TdpOp.AccessGpa(0x211_123, AccessType.Write));
        Assert.Equal(new TdpResult.Mapped(((0x1211 ^ Moved) << 12) | 0x123, PageSize.Size4K, Faulted: true), moved.Result);
        // The rest of that 2 MiB stayed home: no huge leaf mixes the two, so 4 KiB there too.
        Assert.Equal(new TdpResult.Mapped(0x1300000, PageSize.Size4K, Faulted: true), moved.State.Step(Read(0x300)).Result);
        // A second invalidation of the same pages moves them back.
        var back = Run(s, new TdpOp.HostInvalidateStart(0x210, 0x212), new TdpOp.HostInvalidateEnd(0x210, 0x212));
        Assert.Equal(2UL, back.Notifier.Sequence);
        Assert.True(back.Notifier.MigratedFrames.IsEmpty);
        Assert.Equal(new TdpResult.Mapped(0x1211000, PageSize.Size2M, Faulted: true), back.Step(Read(0x211)).Result);
    }

    [Fact]
    public void A_whole_huge_page_that_moved_maps_huge_at_the_other_frame()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.HostInvalidateStart(0x200, 0x400), new TdpOp.HostInvalidateEnd(0x200, 0x400));
        Assert.Equal(new TdpResult.Mapped((0x1200 ^ Moved) << 12 | 0x5000, PageSize.Size2M, Faulted: true), s.Step(Read(0x205)).Result);
    }

    [Fact]
    public void Overlapping_invalidations_retry_in_their_hull_until_the_last_ends()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.HostInvalidateStart(0x200, 0x210), new TdpOp.HostInvalidateStart(0x220, 0x230),
            new TdpOp.HostInvalidateEnd(0x200, 0x210));
        // 0x215 was never invalidated, but KVM's retry range is the hull [0x200, 0x230) while one is open.
        Assert.Equal(new TdpResult.Retry(), s.Step(Read(0x215)).Result);
        Assert.Equal(new GfnRange(0x200, 0x230), s.Notifier.RetryRange);
        s = Run(s, new TdpOp.HostInvalidateEnd(0x220, 0x230));
        Assert.Equal(new TdpResult.Mapped(0x1215000, PageSize.Size4K, Faulted: true), s.Step(Read(0x215)).Result);
        Assert.Equal(2UL, s.Notifier.Sequence);
    }

    [Fact]
    public void A_leaf_the_retry_range_grew_over_still_hits_but_a_write_protection_fault_on_it_retries()
    {
        // Logging, so the read maps a read-only 4 KiB leaf; it is mapped beside the first range, then the
        // second Start widens the retry range over it without zapping it.
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.SetDirtyLogging(0, true), new TdpOp.HostInvalidateStart(0x200, 0x201),
            Read(0x250), new TdpOp.HostInvalidateStart(0x300, 0x301));
        Assert.Equal(new GfnRange(0x200, 0x301), s.Notifier.RetryRange);
        Assert.Equal([new Spte.Leaf(0x250, 1, 0x1250, false)], Leaves(s));
        // A hit never reaches KVM's fault handler.
        Assert.Equal(new TdpResult.Mapped(0x1250000, PageSize.Size4K, Faulted: false), s.Step(Read(0x250)).Result);
        var write = s.Step(new TdpOp.AccessGpa(0x250_000, AccessType.Write));
        Assert.Equal(new TdpResult.Retry(), write.Result);
        Assert.Same(s, write.State);
        s = Run(s, new TdpOp.HostInvalidateEnd(0x200, 0x201), new TdpOp.HostInvalidateEnd(0x300, 0x301));
        Assert.Equal(new TdpResult.Mapped(0x1250000, PageSize.Size4K, Faulted: true), s.Step(new TdpOp.AccessGpa(0x250_000, AccessType.Write)).Result);
    }

    [Fact]
    public void An_end_without_its_start_and_a_memslot_update_during_an_invalidation_are_refused_changing_nothing()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.HostInvalidateStart(0x210, 0x220));
        foreach (var op in new TdpOp[]
        {
            new TdpOp.HostInvalidateEnd(0x210, 0x221), new TdpOp.HostInvalidateEnd(0x200, 0x220),
            new TdpOp.SetDirtyLogging(0, true), new TdpOp.DeleteSlot(0), new TdpOp.MoveSlot(0, 0x1000),
            new TdpOp.CreateSlot(1, 0x1000, 1, 0x9000, PageSize.Size4K, ReadOnly: false),
            new TdpOp.HostInvalidateStart(0x20, 0x20),
        })
        {
            var r = s.Step(op);
            Assert.IsType<VmResult.Rejected>(r.Result);
            Assert.Same(s, r.State);
        }
        s = Run(s, new TdpOp.HostInvalidateEnd(0x210, 0x220), new TdpOp.SetDirtyLogging(0, true));
        Assert.IsType<VmResult.Rejected>(s.Step(new TdpOp.HostInvalidateEnd(0x210, 0x220)).Result);
    }

    [Fact]
    public void A_pre_fault_stops_at_the_range_and_retries_when_it_starts_there()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.SetMaxPageSize(PageSize.Size4K), new TdpOp.HostInvalidateStart(0x204, 0x208));
        Assert.Equal(new TdpResult.Populated(0x4000), s.Step(new TdpOp.PreFault(0x200_000, 0x8000)).Result);
        var r = s.Step(new TdpOp.PreFault(0x204_000, 0x1000));
        Assert.Equal(new TdpResult.Retry(), r.Result);
        Assert.Same(s, r.State);
    }

    [Fact]
    public void A_guest_store_to_a_moved_page_keeps_its_bytes_where_the_vmm_has_them()
    {
        var s = Run(TdpState.Create(Ept), Slot, new TdpOp.HostInvalidateStart(0x210, 0x211), new TdpOp.HostInvalidateEnd(0x210, 0x211));
        var stored = s.Step(new TdpOp.GuestStore(0x210_008, 0x1234, 8));
        Assert.Equal(new TdpResult.Mapped(((0x1210 ^ Moved) << 12) | 8, PageSize.Size4K, Faulted: true), stored.Result);
        Assert.Equal(0x1234UL, stored.State.HostMemory[0x1210_008]);
    }
}
