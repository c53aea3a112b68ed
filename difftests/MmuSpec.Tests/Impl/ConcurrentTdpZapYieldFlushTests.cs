using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// A zap that yields has flushed what it cleared before it drops mmu_lock (upstream a835429cda91): a host unmap
/// run inside the yield finds the leaf gone and owes nothing, so only the zap's own requests keep a vCPU off it.
/// Forced with <see cref="ScriptedSchedule"/> at the zap's first yield (catalog entry c11 moves the flush after the walk).
/// </summary>
public sealed class ConcurrentTdpZapYieldFlushTests : ScriptedTdpFixture
{
    public ConcurrentTdpZapYieldFlushTests()
    {
        // 4 KiB leaves; the range walk yields every two frames.
        CreateVm(maxPageSize: 12, yieldEvery: 2);
        // Gfns 3 to 6 mapped 4 KiB; B holds gfn 3 in its TLB (a hit on its second read).
        for (ulong g = 3; g < 7; g++) Assert.False(_a.Access(g << 12, AccessType.Read).IsRetry);
        Assert.False(_b.Access(3 << 12, AccessType.Read).IsRetry);
        Assert.False(_b.Access(3 << 12, AccessType.Read).Access.Faulted);
        Assert.Equal(1, _b.TlbHitCount);
    }

    [Fact]
    public void A_host_invalidation_inside_a_zap_s_yield_leaves_no_vcpu_using_a_leaf_the_zap_cleared()
    {
        // The zap yields after gfns 3 and 4. There the host invalidates gfn 3 (already gone: nothing of its own to
        // flush) and returns; B, which cached gfn 3, then enters and must not hit it.
        TdpVcpuOutcome afterUnmap = default;
        long hitsBefore = 0;
        ScriptedSchedule.At(SchedulePointKind.Other, 1, () =>
        {
            Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateStart(3, 4));
            hitsBefore = _b.TlbHitCount;
            afterUnmap = _b.Access(3 << 12, AccessType.Read);
        });
        Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(0, 0x200));
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(hitsBefore, _b.TlbHitCount);   // the zap's request for gfn 3 was served first: no TLB hit
        Assert.True(afterUnmap.IsRetry);            // a walk, which the invalidation in progress sends back
        Assert.Equal(TdpStatus.Ok, _mmu.HostInvalidateEnd(3, 4));
    }

    [Fact]
    public void A_zap_of_the_cleared_leaf_inside_a_zap_s_yield_leaves_no_vcpu_using_it()
    {
        ScriptedSchedule.At(SchedulePointKind.Other, 1, () =>
        {
            Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(4, 5));
            var r = _b.Access(4 << 12, AccessType.Read); // B never read gfn 4: a walk either way
            Assert.True(r.Access.Faulted);
            long hits = _b.TlbHitCount;
            var again = _b.Access(3 << 12, AccessType.Read);
            Assert.Equal(hits, _b.TlbHitCount);
            Assert.True(again.Access.Faulted);         // faulted back in: the cleared leaf was not used
        });
        Assert.Equal(TdpStatus.Ok, _mmu.ZapRange(0, 0x200));
        Assert.True(ScriptedSchedule.Fired);
    }
}
