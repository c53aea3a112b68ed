using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the memslot and dirty-log rules both MMU models share (spec/Memory/HostMemslots.cs),
/// written by hand from KVM's semantics: KVM_MEM_LOG_DIRTY_PAGES starts and drops a slot's bitmap, a
/// write marks its slot-relative offset, KVM_GET_DIRTY_LOG fetches and clears; and the two models,
/// stepping the same slot operations, return the same results and keep the same slots.
/// </summary>
public sealed class HostMemslotsTests
{
    static readonly HostMemslot Slot = new(2, BaseGfn: 0x100, Pages: 0x10, HostPfnBase: 0x900, PageSize.Size4K, ReadOnly: false, DirtyLogging: false);

    static HostMemslots WithSlot() => HostMemslots.Empty.Create(Slot);

    static HostMemslot Current(HostMemslots m) => m[Slot.Id]!;

    [Fact]
    public void Dirty_logging_on_starts_an_empty_bitmap_and_off_drops_it()
    {
        var on = WithSlot().SetDirtyLogging(Slot, on: true);
        Assert.True(Current(on).DirtyLogging);
        Assert.Empty(on.DirtyBitmaps[Slot.Id]);

        var marked = on.MarkDirty(Current(on), 0x103);
        Assert.Equal([3UL], marked.DirtyBitmaps[Slot.Id]);
        // Setting the flag again changes nothing: the bitmap keeps what it logged.
        Assert.Equal(marked, marked.SetDirtyLogging(Current(marked), on: true));

        var off = marked.SetDirtyLogging(Current(marked), on: false);
        Assert.False(Current(off).DirtyLogging);
        Assert.False(off.DirtyBitmaps.ContainsKey(Slot.Id));
        var again = off.SetDirtyLogging(Current(off), on: true);
        Assert.Empty(again.DirtyBitmaps[Slot.Id]);
    }

    [Fact]
    public void A_write_is_marked_only_while_its_slot_logs()
    {
        var quiet = WithSlot();
        Assert.Equal(quiet, quiet.MarkDirty(Slot, 0x105));
        var on = quiet.SetDirtyLogging(Slot, on: true);
        var marked = on.MarkDirty(Current(on), 0x10F).MarkDirty(Current(on), 0x100).MarkDirty(Current(on), 0x10F);
        Assert.Equal([0UL, 0xFUL], marked.DirtyBitmaps[Slot.Id]);
    }

    [Fact]
    public void Fetching_the_dirty_log_returns_sorted_gfns_and_clears_the_bitmap()
    {
        var on = WithSlot().SetDirtyLogging(Slot, on: true);
        var marked = on.MarkDirty(Current(on), 0x108).MarkDirty(Current(on), 0x101);

        var first = marked.FetchDirtyLog(Current(marked), out var cleared);
        Assert.Equal(new VmResult.DirtyLog([0x101, 0x108]), first);
        Assert.Equal("dirty gfns [0x101, 0x108]", first.ToString());
        Assert.Empty(cleared.DirtyBitmaps[Slot.Id]);
        Assert.True(Current(cleared).DirtyLogging);
        Assert.Equal(new VmResult.DirtyLog([]), cleared.FetchDirtyLog(Current(cleared), out _));
    }

    [Fact]
    public void The_dirty_log_of_a_slot_that_does_not_log_is_rejected_and_changes_nothing()
    {
        var quiet = WithSlot();
        var result = quiet.FetchDirtyLog(Slot, out var after);
        Assert.Equal(new VmResult.Rejected("slot 2 does not log dirty pages"), result);
        Assert.Same(quiet, after);
    }

    [Fact]
    public void A_moved_slot_keeps_its_bitmap_and_reports_its_new_gfns()
    {
        var on = WithSlot().SetDirtyLogging(Slot, on: true);
        var marked = on.MarkDirty(Current(on), 0x104);
        Assert.Null(marked.MoveProblem(Current(marked), 0x400, gfnLimit: 0x1000));
        var moved = marked.Move(Current(marked), 0x400);
        Assert.Equal(0x400UL, Current(moved).BaseGfn);
        Assert.Equal(new VmResult.DirtyLog([0x404]), moved.FetchDirtyLog(Current(moved), out _));
    }

    [Fact]
    public void Deleting_a_slot_drops_its_bitmap()
    {
        var on = WithSlot().SetDirtyLogging(Slot, on: true);
        var deleted = on.Delete(Current(on));
        Assert.Equal(HostMemslots.Empty, deleted);
        Assert.Null(deleted[Slot.Id]);
    }

    [Fact]
    public void A_new_slot_is_checked_for_its_id_then_its_gfns_then_its_host_frames()
    {
        var m = WithSlot();
        HostMemslot New(int id, ulong baseGfn, ulong pages, ulong hostPfnBase) => new(id, baseGfn, pages, hostPfnBase, PageSize.Size4K, false, false);
        string? Problem(HostMemslot s) => m.CreateProblem(s, gfnLimit: 0x1000, hostPfnLimit: 0x10000, "test entries");
        Assert.Equal("slot id 32 is not in 0..31", Problem(New(32, 0x105, 1, 0x905)));
        Assert.Equal("slot 2 already exists", Problem(New(2, 0x105, 1, 0x905)));
        Assert.Equal("a memslot has at least one page", Problem(New(3, 0x200, 0, 0xA00)));
        Assert.Equal("gfn range [0x10f, 0x111) overlaps slot 2", Problem(New(3, 0x10F, 2, 0xA00)));
        Assert.Equal("gfn range [0xfff, 0x1001) goes beyond gfn 0x1000", Problem(New(3, 0xFFF, 2, 0xA00)));
        Assert.Equal("host frames [0x90f, 0x911) already back slot 2", Problem(New(3, 0x200, 2, 0x90F)));
        Assert.Equal("host frames beyond 0x10000, more than test entries can hold", Problem(New(3, 0x200, 2, 0xFFFF)));
        Assert.Null(Problem(New(3, 0x110, 2, 0x910)));
    }

    /// <summary>
    /// The same slot operations on the TDP and the shadow model: one result type, the same results
    /// (reasons included) and the same slots and bitmaps after every step.
    /// </summary>
    [Fact]
    public void Tdp_and_shadow_models_give_the_same_slot_results()
    {
        (TdpOp Tdp, ShadowOp Shadow)[] steps =
        [
            (new TdpOp.CreateSlot(0, 0x10, 4, 0x100, PageSize.Size4K, false), new ShadowOp.CreateSlot(0, 0x10, 4, 0x100, false)),
            (new TdpOp.CreateSlot(1, 0x20, 2, 0x200, PageSize.Size4K, true), new ShadowOp.CreateSlot(1, 0x20, 2, 0x200, true)),
            (new TdpOp.CreateSlot(32, 0x40, 1, 0x400, PageSize.Size4K, false), new ShadowOp.CreateSlot(32, 0x40, 1, 0x400, false)),
            (new TdpOp.CreateSlot(0, 0x40, 1, 0x400, PageSize.Size4K, false), new ShadowOp.CreateSlot(0, 0x40, 1, 0x400, false)),
            (new TdpOp.CreateSlot(2, 0x13, 2, 0x400, PageSize.Size4K, false), new ShadowOp.CreateSlot(2, 0x13, 2, 0x400, false)),
            (new TdpOp.CreateSlot(2, 0x40, 2, 0x201, PageSize.Size4K, false), new ShadowOp.CreateSlot(2, 0x40, 2, 0x201, false)),
            (new TdpOp.MoveSlot(0, 0x1F), new ShadowOp.MoveSlot(0, 0x1F)),
            (new TdpOp.MoveSlot(0, 0x30), new ShadowOp.MoveSlot(0, 0x30)),
            (new TdpOp.GetDirtyLog(0), new ShadowOp.GetDirtyLog(0)),
            (new TdpOp.SetDirtyLogging(5, true), new ShadowOp.SetDirtyLogging(5, true)),
            (new TdpOp.SetDirtyLogging(0, true), new ShadowOp.SetDirtyLogging(0, true)),
            (new TdpOp.GuestStore(0x32008, 0xAB, 8), new ShadowOp.GuestStore(0x32008, 0xAB, 8)),
            (new TdpOp.GetDirtyLog(0), new ShadowOp.GetDirtyLog(0)),
            (new TdpOp.GetDirtyLog(0), new ShadowOp.GetDirtyLog(0)),
            (new TdpOp.DeleteSlot(1), new ShadowOp.DeleteSlot(1)),
            (new TdpOp.DeleteSlot(1), new ShadowOp.DeleteSlot(1)),
        ];
        var tdp = TdpState.Create(new VmConfig(TdpFormat.Ept));
        var shadow = ShadowState.Create(new ShadowConfig(46));
        var said = new List<string>();
        foreach (var (tdpOp, shadowOp) in steps)
        {
            var t = tdp.Step(tdpOp);
            var s = shadow.Step(shadowOp);
            (tdp, shadow) = (t.State, s.State);
            if (tdpOp is TdpOp.GuestStore) continue;    // an access: each MMU's own outcome
            Assert.Equal(t.Result, s.Result);
            Assert.Equal(tdp.Memslots, shadow.Memslots);
            said.Add(t.Result.ToString());
        }
        Assert.Equal(
        [
            "ok", "ok", "rejected: slot id 32 is not in 0..31", "rejected: slot 0 already exists",
            "rejected: gfn range [0x13, 0x15) overlaps slot 0", "rejected: host frames [0x201, 0x203) already back slot 1",
            "rejected: gfn range [0x1f, 0x23) overlaps slot 1", "ok", "rejected: slot 0 does not log dirty pages",
            "rejected: there is no slot 5", "ok", "dirty gfns [0x32]", "dirty gfns []", "ok", "rejected: there is no slot 1",
        ], said);
        Assert.Equal(ImmutableSortedSet<ulong>.Empty, tdp.Memslots.DirtyBitmaps[0]);
    }
}
