using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Real threads, bounded by counts: vCPUs fault over a small range while the host invalidates pieces of it
/// (Start, End: the pages move) under the write side. After the last End every leaf must map the frame its
/// page has now: a fault that installed a frame it looked up before an End would stay behind as a stale leaf
/// (the variant without the sequence check, catalog entry concurrency/04, failed this in 3 of 3 runs). Every page goes back to the pool.
/// </summary>
public sealed class ConcurrentTdpNotifierStressTests
{
    const ulong Pages = 0x400, HostBase = 0x100000;
    const int FaultThreads = 2, FaultsPerThread = 4000, Invalidations = 300;

    /// <summary>Gives the core away at every 3rd schedule point, the notifier's lookup point among them.</summary>
    readonly struct YieldingSchedule : ISchedulePoint
    {
        [ThreadStatic] static int s_points;

        public static void Yield(SchedulePointKind what)
        {
            if (++s_points % 3 == 0)
                Thread.Yield();
        }
    }

    [Fact]
    public void Faults_racing_invalidations_leave_only_leaves_that_map_where_the_pages_are()
    {
        using var pool = new NativePagePool();
        var mmu = new ConcurrentTdpMmu<EptFormat, YieldingSchedule>(sharedBit: null, pool);
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, Pages, HostBase, 21, readOnly: false));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12));
        var vcpus = Enumerable.Range(0, FaultThreads).Select(_ => mmu.CreateVcpu()).ToArray();
        long retries = 0, mapped = 0;
        var threads = vcpus.Select((vcpu, t) => new Thread(() =>
        {
            var rng = new Random(100 + t);
            for (int i = 0; i < FaultsPerThread; i++)
            {
                ulong gfn = (ulong)rng.Next(0, 64);
                var r = vcpu.Access(gfn << 12, rng.Next(2) == 0 ? AccessType.Read : AccessType.Write);
                if (r.IsRetry) Interlocked.Increment(ref retries);
                else Interlocked.Increment(ref mapped);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        var host = new Random(7);
        for (int i = 0; i < Invalidations; i++)
        {
            ulong start = (ulong)host.Next(0, 64), end = start + (ulong)host.Next(1, 8);
            Assert.Equal(TdpStatus.Ok, mmu.HostInvalidateStart(start, end));
            Thread.Yield();
            Assert.Equal(TdpStatus.Ok, mmu.HostInvalidateEnd(start, end));
        }
        threads.ForEach(t => t.Join());

        Assert.True(retries > 0 && mapped > 0, $"{retries} retries, {mapped} mapped");
        Assert.Equal((ulong)Invalidations, mmu.InvalidateSequence);
        var moved = mmu.MigratedHostFrames;
        int leaves = 0;
        mmu.VisitPages((_, entries) =>
        {
            foreach (var e in entries.Where(e => e.IsLeaf))
            {
                ulong home = HostBase + e.LeafGfn;
                bool isMoved = moved.Any(r => home >= r.Start && home < r.End);
                Assert.Equal(isMoved ? home ^ HostInvalidations.MigratedFrameBit : home, e.HostPfn);
                leaves++;
            }
        });
        Assert.True(leaves > 0);
        foreach (var v in vcpus) v.Dispose();
        mmu.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
