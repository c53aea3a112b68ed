using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The concurrent fault against a host invalidation, forced with <see cref="ScriptedSchedule"/>: the
/// invalidation runs while the fault sits at its host-page lookup, after it read the sequence and before it
/// took mmu_lock (KVM's window between mmu_invalidate_seq and is_page_fault_stale).
/// </summary>
public sealed class ConcurrentTdpNotifierRaceTests : ScriptedTdpFixture
{
    const ulong Moved = HostInvalidations.MigratedFrameBit;

    // One vCPU: the invalidation runs inside its fault.
    public ConcurrentTdpNotifierRaceTests() => CreateVm(maxPageSize: 12, vcpus: 1);

    TdpVcpuOutcome Read(ulong gfn) => _a.Access(gfn << 12, AccessType.Read);

    void InvalidateAtLookup(bool end)
    {
        ScriptedSchedule.At(SchedulePointKind.Other, 1, () =>
        {
            Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateStart(5, 6));
            if (end) Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateEnd(5, 6));
        });
    }

    /// <summary>Without the sequence check (catalog entry concurrency/04) the first read would map the stale frame HostBase + 5.</summary>
    [Fact]
    public void A_fault_that_looked_up_the_page_before_a_whole_invalidation_retries_then_maps_the_moved_frame()
    {
        InvalidateAtLookup(end: true);
        Assert.True(Read(5).IsRetry); // the sequence moved
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(TdpAccessOutcome.Mapped(((HostBase + 5) ^ Moved) << 12, 12, faulted: true), Read(5).Access);
        Assert.Equal(1UL, _mmu.InvalidateSequence);
    }

    [Fact]
    public void A_fault_that_meets_an_invalidation_in_progress_retries_until_it_ends()
    {
        InvalidateAtLookup(end: false);
        Assert.True(Read(5).IsRetry);
        Assert.True(Read(5).IsRetry); // still in progress: the same sequence, but the gfn is in the retry range
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + 6) << 12, 12, faulted: true), Read(6).Access);
        Assert.Equal(SlotStatus.Rejected, _mmu.DeleteSlot(0)); // a memslot update waits for it
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateEnd(5, 6));
        Assert.Equal(TdpStatus.Rejected, _mmu.HostInvalidateEnd(5, 6));
        Assert.Equal(TdpAccessOutcome.Mapped(((HostBase + 5) ^ Moved) << 12, 12, faulted: true), Read(5).Access);
    }

    [Fact]
    public void A_write_protection_fault_inside_the_retry_range_retries_though_the_fast_path_could_fix_it()
    {
        // A leaf between two open invalidations stays present, but the retry range is their hull: the spec
        // answers Retry for a write-protection fault there, so the lockless fast fault must not answer first.
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + 3) << 12, 12, faulted: true), _a.Access(3 << 12, AccessType.Write).Access);
        var dirty = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _mmu.GetDirtyLog(0, dirty)); // write-protects gfn 3 (W clear, MMU-writable kept)
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateStart(0, 2));
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateStart(5, 7));
        Assert.True(_a.Access(3 << 12, AccessType.Write).IsRetry);
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateEnd(0, 2));
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateEnd(5, 7));
        long taken = _mmu.FastFaultsTaken;
        Assert.Equal(TdpAccessOutcome.Mapped((HostBase + 3) << 12, 12, faulted: true), _a.Access(3 << 12, AccessType.Write).Access);
        Assert.Equal(taken + 1, _mmu.FastFaultsTaken); // and once the invalidations end, the fast path fixes it
    }

    [Fact]
    public void Faults_after_pages_moved_allocate_nothing()
    {
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateStart(0, 0x200));
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateEnd(0, 0x200));
        for (int round = 0; round < 2; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (ulong gfn = 0; gfn < 0x400; gfn++)
                Assert.False(Read(gfn).IsRetry);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(0, 0x400));
            if (round == 1) Assert.Equal(0, bytes);
        }
    }
}
