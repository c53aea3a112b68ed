using MmuSpec.Harness.Tdp;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The impl's remote TLB flushes (ITdpVm.TakeFlushes), by hand: what it flushes where the spec's
/// obligation tests (Spec/TdpModelTests.cs) say a flush is needed, and the flush log's own behaviour.
/// </summary>
public sealed class TdpFlushTests : IDisposable
{
    readonly NativePagePool pool = new();
    readonly ITdpVm vm;

    public TdpFlushTests()
    {
        vm = TdpVm.Create(TdpFormatKind.Ept, null, pool);
        // gfns [0x200, 0x600) on 2 MiB host pages, equally aligned: two 2 MiB leaves fit.
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x400, 0x1200, 21, readOnly: false));
    }

    public void Dispose()
    {
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    static TdpFlushRange Single(TdpFlushLog log)
    {
        Assert.False(log.FlushedAll);
        Assert.Equal(1, log.Count);
        return log[0];
    }

    void Map(ulong gpa, AccessType type, int pageShift)
    {
        var o = vm.Access(gpa, type);
        Assert.Equal(TdpAccessStatus.Mapped, o.Status);
        Assert.Equal(pageShift, o.PageShift);
    }

    [Fact]
    public void A_one_page_zap_of_a_2MiB_leaf_flushes_all_2MiB_and_taking_the_log_empties_it()
    {
        Map(0x23_4000, AccessType.Read, 21);
        Assert.True(vm.TakeFlushes().IsEmpty);                      // a new mapping flushes nothing
        Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x234, 0x235));
        Assert.Equal(new TdpFlushRange(0x200, 0x200), Single(vm.TakeFlushes()));
        Assert.True(vm.TakeFlushes().IsEmpty);
        Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x234, 0x235));      // nothing left to zap
        Assert.True(vm.TakeFlushes().IsEmpty);
    }

    [Fact]
    public void Dirty_logging_on_flushes_the_slot_and_a_logged_write_to_a_huge_leaf_flushes_the_leaf()
    {
        Map(0x20_0000, AccessType.Write, 21);
        Assert.Equal(SlotStatus.Ok, vm.SetDirtyLogging(0, true));
        Assert.Equal(new TdpFlushRange(0x200, 0x400), Single(vm.TakeFlushes()));
        Map(0x20_3000, AccessType.Write, 12);
        Assert.Equal(new TdpFlushRange(0x200, 0x200), Single(vm.TakeFlushes()));
        // Fetching the log write-protects the written page: the memslot is flushed, as KVM does.
        var gfns = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, vm.GetDirtyLog(0, gfns));
        Assert.Equal([0x203UL], gfns);
        Assert.Equal(new TdpFlushRange(0x200, 0x400), Single(vm.TakeFlushes()));
        // Nothing dirty, nothing write-protected, nothing flushed.
        Assert.Equal(SlotStatus.Ok, vm.GetDirtyLog(0, gfns));
        Assert.True(vm.TakeFlushes().IsEmpty);
    }

    [Fact]
    public void A_table_replaced_by_a_huge_leaf_is_flushed_over_everything_it_covered()
    {
        Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
        Map(0x20_1000, AccessType.Read, 12);
        Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(21));
        Map(0x20_5000, AccessType.Read, 21);
        Assert.Equal(new TdpFlushRange(0x200, 0x200), Single(vm.TakeFlushes()));
    }

    [Fact]
    public void Zap_all_flushes_everything_once_there_are_tables()
    {
        Assert.Equal(TdpStatus.Ok, vm.ZapAll());
        Assert.True(vm.TakeFlushes().IsEmpty);
        Map(0x20_0000, AccessType.Read, 21);
        Assert.Equal(TdpStatus.Ok, vm.ZapAll());
        var log = vm.TakeFlushes();
        Assert.True(log.FlushedAll);
        Assert.Equal(0, log.Count);
        Assert.Null(ImplTdpEngine.Flushed(log));
    }

    [Fact]
    public void Adjacent_flushes_merge_and_more_disjoint_ranges_than_the_log_holds_become_a_flush_of_everything()
    {
        Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
        for (ulong gfn = 0x200; gfn < 0x210; gfn++) Map(gfn << 12, AccessType.Read, 12);
        Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x200, 0x210));
        Assert.Equal(new TdpFlushRange(0x200, 0x10), Single(vm.TakeFlushes()));   // 16 leaves, one range

        // Every other page: each zapped leaf is its own range, one more than the log holds.
        for (int i = 0; i <= TdpFlushLog.Capacity; i++) Map((0x300UL + 2 * (ulong)i) << 12, AccessType.Read, 12);
        Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x300, 0x300 + 2 * (TdpFlushLog.Capacity + 1)));
        Assert.True(vm.TakeFlushes().FlushedAll);
    }

    [Fact]
    public void The_flush_log_read_into_the_spec_vocabulary_names_the_same_gfns()
    {
        Map(0x20_0000, AccessType.Read, 21);
        Map(0x40_0000, AccessType.Read, 21);
        Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x3FF, 0x401));
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x600)), ImplTdpEngine.Flushed(vm.TakeFlushes()));
    }

    [Fact]
    public void Recording_and_taking_flushes_allocates_nothing()
    {
        // Warm up every path once (JIT, the table pool), then measure the same work again.
        for (int round = 0; round < 3; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            vm.SetMaxPageSize(12);
            for (ulong gfn = 0x200; gfn < 0x240; gfn += 2) vm.Access(gfn << 12, AccessType.Read);
            vm.SetMaxPageSize(21);
            vm.Access(0x20_1000, AccessType.Read);                     // replaces the table: a flush
            vm.ZapRange(0x234, 0x235);                                 // zaps the 2 MiB leaf: a flush
            TdpFlushLog log = vm.TakeFlushes();
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(new TdpFlushRange(0x200, 0x200), Single(log));   // both flushes, merged
            if (round > 0) Assert.Equal(0, bytes);
        }
    }
}
