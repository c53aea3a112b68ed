using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>A schedule-point double that counts the points of each kind this thread passed.</summary>
public readonly struct CountingSchedule : ISchedulePoint
{
    [ThreadStatic] static int[]? s_counts;
    static readonly int Kinds = Enum.GetValues<SchedulePointKind>().Length;

    public static void Yield(SchedulePointKind what) => (s_counts ??= new int[Kinds])[(int)what]++;

    public static int Count(SchedulePointKind kind) => s_counts?[(int)kind] ?? 0;

    public static void Reset() => Array.Clear(s_counts ??= new int[Kinds]);
}

/// <summary>
/// The lockless fast page fault of the concurrent TDP MMU (ConcurrentTdpMmu.FastFault.cs, docs/tdp-concurrency.md):
/// when it fixes a leaf without mmu_lock, when it leaves the fault to the slow path, and its counters.
/// </summary>
public sealed class ConcurrentTdpFastFaultTests : IDisposable
{
    const ulong HostBase = 0x100000;
    readonly NativePagePool _pool = new();
    readonly ConcurrentTdpMmu<EptFormat, CountingSchedule> _mmu;
    readonly ConcurrentTdpVcpu<EptFormat, CountingSchedule> _vcpu;

    public ConcurrentTdpFastFaultTests()
    {
        _mmu = new ConcurrentTdpMmu<EptFormat, CountingSchedule>(sharedBit: null, _pool);
        _vcpu = _mmu.CreateVcpu();
        Assert.Equal(SlotStatus.Ok, _mmu.CreateSlot(0, 0, 0x1000, HostBase, 21, readOnly: false));
        Assert.Equal(SlotStatus.Ok, _mmu.CreateSlot(1, 0x1000, 0x10, 0x900000, 12, readOnly: true));
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(12));
    }

    public void Dispose()
    {
        _vcpu.Dispose();
        _mmu.Dispose();
        Assert.Equal(0, _pool.PagesInUse);
        _pool.Dispose();
    }

    TdpAccessOutcome Access(ulong gfn, AccessType type)
    {
        var o = _vcpu.Access(gfn << 12, type);
        Assert.False(o.IsRetry);
        return o.Access;
    }

    static TdpAccessOutcome Mapped(ulong gfn, int shift, bool faulted) => TdpAccessOutcome.Mapped((HostBase + gfn) << 12, shift, faulted);

    ulong Leaf(ulong gfn)
    {
        ulong found = 0;
        _mmu.VisitPages((_, entries) =>
        {
            foreach (var e in entries)
                if (e.IsLeaf && gfn - e.LeafGfn < 1UL << (9 * (e.LeafLevel - 1))) found = e.Raw;
        });
        return found;
    }

    [Fact]
    public void A_write_to_a_leaf_dirty_logging_protected_is_fixed_without_any_lock()
    {
        Assert.Equal(Mapped(7, 12, true), Access(7, AccessType.Write));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));  // W cleared, MMU-writable kept
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false)); // the leaf stays read-only
        CountingSchedule.Reset();
        Assert.Equal(Mapped(7, 12, true), Access(7, AccessType.Write));
        Assert.Equal(0, CountingSchedule.Count(SchedulePointKind.LockAcquire)); // neither mmu_lock nor the side lock
        Assert.Equal(1, CountingSchedule.Count(SchedulePointKind.SpteExchange));
        Assert.Equal((1L, 0L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        Assert.True(EptFormat.IsWritable(Leaf(7)) && TdpLeaf<EptFormat>.IsMmuWritable(Leaf(7)));

        // A write hit is answered on the same path, also without a lock.
        CountingSchedule.Reset();
        Assert.Equal(Mapped(7, 12, false), Access(7, AccessType.Write));
        Assert.Equal(0, CountingSchedule.Count(SchedulePointKind.LockAcquire));
        Assert.Equal(1L, _mmu.FastFaultsTaken);
    }

    [Fact]
    public void A_fast_fault_in_a_logging_slot_marks_the_gfn_dirty()
    {
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(Mapped(9, 12, true), Access(9, AccessType.Read)); // read-only while logging, MMU-writable
        CountingSchedule.Reset();
        Assert.Equal(Mapped(9, 12, true), Access(9, AccessType.Write));
        Assert.Equal(1, CountingSchedule.Count(SchedulePointKind.LockAcquire)); // the bitmap's side lock, not mmu_lock
        Assert.Equal(1L, _mmu.FastFaultsTaken);
        var gfns = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _mmu.GetDirtyLog(0, gfns));
        Assert.Equal([9UL], gfns);
        Assert.False(EptFormat.IsWritable(Leaf(9)));
        Assert.True(TdpLeaf<EptFormat>.IsMmuWritable(Leaf(9)));
        Assert.Equal(Mapped(9, 12, true), Access(9, AccessType.Write)); // fast again, logged again
        Assert.Equal(2L, _mmu.FastFaultsTaken);
        gfns.Clear();
        Assert.Equal(SlotStatus.Ok, _mmu.GetDirtyLog(0, gfns));
        Assert.Equal([9UL], gfns);
    }

    [Fact]
    public void A_huge_leaf_of_a_logging_slot_is_refused_and_split_by_the_slow_path()
    {
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(21));
        Assert.Equal(Mapped(0x200, 21, true), Access(0x200, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.True(TdpLeaf<EptFormat>.IsMmuWritable(Leaf(0x201))); // MMU-writable: only the level refuses it
        CountingSchedule.Reset();
        Assert.Equal(Mapped(0x201, 12, true), Access(0x201, AccessType.Write));
        Assert.True(CountingSchedule.Count(SchedulePointKind.LockAcquire) > 1);
        Assert.Equal((0L, 1L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        var gfns = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _mmu.GetDirtyLog(0, gfns));
        Assert.Equal([0x201UL], gfns);

        // Without logging a huge leaf is fixed in place, as the slow path would.
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        Assert.Equal(Mapped(0x400, 21, true), Access(0x400, AccessType.Read));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        Assert.Equal(Mapped(0x401, 21, true), Access(0x401, AccessType.Write));
        Assert.Equal((1L, 1L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
    }

    [Fact]
    public void Holes_read_only_slots_and_missing_roots_go_to_the_slow_path_uncounted()
    {
        Assert.Equal(Mapped(3, 12, true), Access(3, AccessType.Write));    // no root yet
        Assert.Equal(Mapped(4, 12, true), Access(4, AccessType.Write));    // a hole
        Assert.Equal(TdpAccessStatus.MmioExit, Access(0x1001, AccessType.Write).Status); // read-only slot
        Assert.Equal(TdpAccessStatus.MmioExit, Access(0x2000, AccessType.Write).Status); // no slot
        Assert.Equal((0L, 0L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
    }

    [Fact]
    public void Write_tracking_protects_w_and_mmu_writable_exits_writes_and_untracking_lets_the_slow_path_restore_both()
    {
        Assert.Equal(Mapped(5, 12, true), Access(5, AccessType.Write));
        _mmu.TakeFlushes();
        Assert.Equal(TdpStatus.Ok, _mmu.TrackWrites(5));
        Assert.Equal("[0x5, 0x6)", _mmu.TakeFlushes().ToString());
        Assert.False(EptFormat.IsWritable(Leaf(5)) || TdpLeaf<EptFormat>.IsMmuWritable(Leaf(5)));
        Assert.True(TdpLeaf<EptFormat>.IsHostWritable(Leaf(5)));
        Assert.Equal(TdpAccessStatus.MmioExit, Access(5, AccessType.Write).Status); // emulated
        Assert.Equal(Mapped(5, 12, false), Access(5, AccessType.Read));
        Assert.Equal((0L, 1L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        Assert.Equal(TdpStatus.Ok, _mmu.TrackWrites(5)); // already tracked and protected: no flush
        Assert.Equal("no flush", _mmu.TakeFlushes().ToString());
        Assert.Equal(TdpStatus.Rejected, _mmu.TrackWrites(0x2000)); // in no slot

        Assert.Equal(TdpStatus.Ok, _mmu.UntrackWrites(5));
        Assert.Equal(TdpStatus.Rejected, _mmu.UntrackWrites(5));
        Assert.Equal(Mapped(5, 12, true), Access(5, AccessType.Write)); // refused fast, fixed under mmu_lock
        Assert.Equal((0L, 2L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        Assert.True(EptFormat.IsWritable(Leaf(5)) && TdpLeaf<EptFormat>.IsMmuWritable(Leaf(5)));
    }

    [Fact]
    public void No_huge_leaf_covers_a_tracked_gfn()
    {
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(21));
        Assert.Equal(Mapped(0x200, 21, true), Access(0x200, AccessType.Read));
        Assert.Equal(TdpStatus.Ok, _mmu.TrackWrites(0x201));
        Assert.False(TdpLeaf<EptFormat>.IsMmuWritable(Leaf(0x205))); // the 2 MiB leaf is protected whole
        _mmu.TakeFlushes();
        // A write elsewhere in it goes to the slow path, which zaps the huge leaf and maps 4 KiB.
        Assert.Equal(Mapped(0x205, 12, true), Access(0x205, AccessType.Write));
        Assert.Equal("[0x200, 0x400)", _mmu.TakeFlushes().ToString());
        Assert.Equal(Mapped(0x201, 12, true), Access(0x201, AccessType.Read));
        Assert.False(EptFormat.IsWritable(Leaf(0x201)) || TdpLeaf<EptFormat>.IsMmuWritable(Leaf(0x201)));
        Assert.Equal(Mapped(0x400, 21, true), Access(0x400, AccessType.Read)); // the next 2 MiB has no tracked gfn
    }

    [Fact]
    public void Fast_faults_allocate_nothing()
    {
        using var pool = new NativePagePool();
        var mmu = new ConcurrentTdpMmu<EptFormat, NoSchedulePoints>(sharedBit: null, pool);
        var vcpu = mmu.CreateVcpu();
        const ulong Pages = 0x400;
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, Pages, HostBase, 21, readOnly: false));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12));
        var gfns = new List<ulong>((int)Pages);
        Assert.Equal(SlotStatus.Ok, mmu.SetDirtyLogging(0, true));
        long bytes = 0;
        for (int round = 0; round < 3; round++) // the first warms up (JIT, tables, the bitmap) and maps by slow faults
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (ulong gfn = 0; gfn < Pages; gfn++)
            {
                if (vcpu.Access(gfn << 12, AccessType.Write).Access.Status != TdpAccessStatus.Mapped)
                    bytes = -1;
            }
            bytes = bytes < 0 ? bytes : GC.GetAllocatedBytesForCurrentThread() - before;
            gfns.Clear();
            Assert.Equal(SlotStatus.Ok, mmu.GetDirtyLog(0, gfns)); // write-protects every gfn again
            Assert.Equal((int)Pages, gfns.Count);
        }
        Assert.Equal(0, bytes);
        Assert.Equal(2 * (long)Pages, mmu.FastFaultsTaken); // rounds 2 and 3: every write fixed a logged read-only leaf
        vcpu.Dispose();
        mmu.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    /// <summary>
    /// Real threads: two vCPUs write every gfn of a logging slot, round after round, while this thread fetches
    /// the dirty log. Every gfn written must turn up in some fetched log, no leaf breaks the writability
    /// invariants, and nothing leaks.
    /// </summary>
    [Fact]
    public void Threads_writing_while_the_log_is_fetched_lose_no_dirty_gfn()
    {
        using var pool = new NativePagePool();
        var mmu = new ConcurrentTdpMmu<EptFormat, NoSchedulePoints>(sharedBit: null, pool);
        const ulong Pages = 0x200;
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, Pages, HostBase, 21, readOnly: false));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12));
        Assert.Equal(SlotStatus.Ok, mmu.SetDirtyLogging(0, true));
        var vcpus = new[] { mmu.CreateVcpu(), mmu.CreateVcpu() };
        var logged = new HashSet<ulong>();
        var gfns = new List<ulong>();
        long fetches = 0;
        var threads = vcpus.Select((v, t) => new Thread(() =>
        {
            for (int round = 0; round < 40; round++)
            {
                for (ulong i = 0; i < Pages; i++)
                {
                    ulong gfn = t == 0 ? i : Pages - 1 - i;
                    TdpVcpuOutcome o;
                    while ((o = v.Access(gfn << 12, AccessType.Write)).IsRetry) { }
                    Assert.Equal(TdpAccessStatus.Mapped, o.Access.Status);
                }
                // Two more fetches mean one began after this round's writes: it write-protected them, so the next
                // round's writes meet write-protected leaves (the fast path) however the threads were scheduled.
                long roundEnd = Interlocked.Read(ref fetches);
                while (round < 39 && Interlocked.Read(ref fetches) < roundEnd + 2)
                    Thread.Yield();
            }
        }) { IsBackground = true }).ToList(); // a failed fetch on this thread must not leave the writers waiting forever
        threads.ForEach(t => t.Start());
        while (threads.Any(t => t.IsAlive))
        {
            gfns.Clear();
            Assert.Equal(SlotStatus.Ok, mmu.GetDirtyLog(0, gfns));
            logged.UnionWith(gfns);
            Interlocked.Increment(ref fetches);
        }
        threads.ForEach(t => t.Join());
        gfns.Clear();
        Assert.Equal(SlotStatus.Ok, mmu.GetDirtyLog(0, gfns));
        logged.UnionWith(gfns);
        Assert.Equal((int)Pages, logged.Count);
        mmu.VisitPages((_, entries) =>
        {
            foreach (var e in entries)
                if (e.IsLeaf) Assert.True(TdpLeaf<EptFormat>.KeepsInvariants(e.Raw) && TdpLeaf<EptFormat>.IsMmuWritable(e.Raw));
        });
        Assert.True(mmu.FastFaultsTaken > 0);
        foreach (var v in vcpus) v.Dispose();
        mmu.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }
}
