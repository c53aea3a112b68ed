using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Real threads on the concurrent TDP MMU (impl/TdpConcurrent), bounded by operation counts (no timing,
/// no sleeps): fault threads over overlapping gfns while a writer zaps ranges and flips the mapping
/// policy under the write side, then a final pass of faults at 2 MiB over tables the first phase left,
/// which replaces them concurrently (frozen entries, deferred frees). Every answer is checked as it
/// comes, and the end state from the tables themselves.
/// </summary>
public sealed class ConcurrentTdpStressTests
{
    const ulong Pages = 0x2000, HostBase = 0x100000; // 32 MiB: sixteen 2 MiB regions
    // Answers checked by Fault, for the run in progress (the theory's cases run one after another).
    static long checkedAnswers;

    const int FaultThreads = 3, FaultsPerThread = 3000, WriterOps = 300, MaxRetries = 1_000_000;

    [Theory]
    [InlineData(TdpFormatKind.Ept, false)]
    [InlineData(TdpFormatKind.Stage2, false)]
    [InlineData(TdpFormatKind.Ept, true)]
    public void Faults_race_zaps_and_policy_changes_and_the_end_state_is_exact(TdpFormatKind format, bool yielding)
    {
        if (format == TdpFormatKind.Ept && yielding)
            Run<EptFormat, YieldingSchedule>();
        else if (format == TdpFormatKind.Ept)
            Run<EptFormat, NoSchedulePoints>();
        else
            Run<Stage2Format, NoSchedulePoints>();
    }

    /// <summary>
    /// Gives the core away at every 5th schedule point of a thread (a count, not a clock), so real threads
    /// interleave between an entry's read and its exchange far more often than they would by preemption.
    /// </summary>
    readonly struct YieldingSchedule : ISchedulePoint
    {
        [ThreadStatic] static int s_points;

        public static void Yield(SchedulePointKind what)
        {
            if (++s_points % 5 == 0)
                Thread.Yield();
        }
    }

    static void Run<TFormat, TSched>() where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint
    {
        using var pool = new NativePagePool();
        var mmu = new ConcurrentTdpMmu<TFormat, TSched>(sharedBit: null, pool);
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, Pages, HostBase, 21, readOnly: false));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12)); // the first faults build level-1 tables
        var vcpus = new ConcurrentTdpVcpu<TFormat, TSched>[FaultThreads];
        for (int i = 0; i < FaultThreads; i++)
            vcpus[i] = mmu.CreateVcpu();
        long retries = 0, faults = 0, progress = 0;
        checkedAnswers = 0;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();

        // Phase 1: faults against a writer.
        var threads = new List<Action>();
        for (int t = 0; t < FaultThreads; t++)
        {
            int id = t;
            threads.Add(() =>
            {
                var rng = new Random(100 + id);
                for (int i = 0; i < FaultsPerThread; i++)
                {
                    ulong gfn = (ulong)rng.NextInt64((long)Pages);
                    var type = (AccessType)rng.Next(3);
                    Fault(vcpus[id], gfn, type, ref retries, ref faults, errors, allowHuge: true);
                    Interlocked.Increment(ref progress);
                }
            });
        }
        threads.Add(() =>
        {
            var rng = new Random(7);
            for (int i = 0; i < WriterOps; i++)
            {
                // Paced by the faults done (a count, not a clock), so the writer's ops spread over phase 1.
                var spin = new SpinWait();
                while (Volatile.Read(ref progress) < (long)i * FaultThreads * FaultsPerThread / WriterOps)
                    spin.SpinOnce();
                if (rng.Next(3) == 0)
                {
                    mmu.SetMaxPageSize(rng.Next(2) == 0 ? (byte)12 : (byte)21);
                }
                else
                {
                    ulong start = (ulong)rng.NextInt64((long)Pages);
                    mmu.ZapRange(start, Math.Min(Pages, start + (ulong)rng.Next(1, 0x400)));
                }
            }
        });
        RunAll(threads);
        Assert.Empty(errors);

        // Between the phases, from this thread: every leaf goes (tables stay) and the policy becomes 2 MiB,
        // so no gfn is covered by a leaf from before; the tables phase 1 left are what phase 2 replaces.
        Assert.Equal(TdpStatus.Ok, mmu.ZapRange(0, Pages));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12));
        for (ulong g = 0; g < Pages; g += 0x200)
            Assert.Equal(12, vcpus[0].Access(g << 12, AccessType.Read).Access.PageShift); // a level-1 table in every region
        Assert.Equal(TdpStatus.Ok, mmu.ZapRange(0, Pages));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(21));
        Assert.Equal(3 + 16, mmu.TablePages); // root, level 3, level 2 and sixteen level-1 tables, all empty
        long retiredBefore = mmu.DeferredTablesRetired;

        // Phase 2: every thread faults every region, in its own order: each region's level-1 table is
        // replaced by a 2 MiB leaf by whichever vCPU gets there first; the others hit, or retry.
        threads.Clear();
        for (int t = 0; t < FaultThreads; t++)
        {
            int id = t;
            threads.Add(() =>
            {
                var rng = new Random(200 + id);
                for (int i = 0; i < 4 * (int)(Pages / 0x200); i++)
                {
                    ulong gfn = (ulong)rng.NextInt64((long)Pages);
                    Fault(vcpus[id], gfn, (AccessType)rng.Next(3), ref retries, ref faults, errors, allowHuge: true, mustBeHuge: true);
                }
                for (ulong g = 0; g < Pages; g += 0x200)
                    Fault(vcpus[id], g + (ulong)id, AccessType.Read, ref retries, ref faults, errors, allowHuge: true, mustBeHuge: true);
            });
        }
        RunAll(threads);
        Assert.Empty(errors);

        // The end state, read from the tables: every region one writable-or-not 2 MiB leaf on the right
        // host frames, no 4 KiB leaf and no level-1 table left.
        var leaves = new List<TdpEntryInfo>();
        long tables = 0;
        mmu.VisitPages((key, entries) =>
        {
            tables++;
            Assert.NotEqual(1, key.Level);
            leaves.AddRange(entries.Where(e => e.IsLeaf));
        });
        Assert.Equal((int)(Pages / 0x200), leaves.Count);
        foreach (var leaf in leaves)
        {
            Assert.Equal(2, leaf.LeafLevel);
            Assert.Equal(HostBase + leaf.LeafGfn, leaf.HostPfn);
        }
        Assert.Equal(Enumerable.Range(0, (int)(Pages / 0x200)).Select(r => (ulong)r * 0x200), leaves.Select(l => l.LeafGfn).Order());
        Assert.Equal(3, tables); // root, level 3, level 2
        Assert.Equal(tables, mmu.TablePages); // nothing lost between the tree, the caches and the deferred list

        // Every replaced level-1 table was retired; they are freed once the epochs drain (the write side
        // drains them all: no reader runs).
        Assert.Equal(16, mmu.DeferredTablesRetired - retiredBefore);
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(21));
        Assert.Equal(0, mmu.DeferredTablesPending);
        Assert.Equal(mmu.DeferredTablesRetired, mmu.DeferredTablesFreed);
        // Every answer was checked (the count is fixed; how many faulted rather than hit depends on the interleaving).
        Assert.Equal(FaultThreads * (FaultsPerThread + 4 * (int)(Pages / 0x200) + (int)(Pages / 0x200)), Volatile.Read(ref checkedAnswers));
        Assert.True(faults > 0);
        Console.WriteLine($"{typeof(TFormat).Name}, {typeof(TSched).Name}: {faults} faults, {retries} retries, {mmu.DeferredTablesRetired} tables deferred and freed");

        Assert.Equal(TdpStatus.Ok, mmu.ZapAll());
        Assert.Equal(0, mmu.TablePages);
        foreach (var vcpu in vcpus)
            vcpu.Dispose();
        mmu.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void Steady_state_faults_allocate_nothing()
    {
        using var pool = new NativePagePool();
        var mmu = new ConcurrentTdpMmu<EptFormat, NoSchedulePoints>(sharedBit: null, pool);
        var vcpu = mmu.CreateVcpu();
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, Pages, HostBase, 21, readOnly: false));
        // Warm up every path once (JIT, the allocator's slabs, the deferred list).
        long bytes = 0;
        for (int round = 0; round < 2; round++)
        {
            bytes = 0;
            Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12));
            bytes += FaultAll(vcpu, AccessType.Write); // misses: new tables from the vCPU's cache
            bytes += FaultAll(vcpu, AccessType.Read); // hits
            Assert.Equal(TdpStatus.Ok, mmu.ZapRange(0, Pages));
            bytes += FaultAll(vcpu, AccessType.Read); // misses into existing tables
            Assert.Equal(TdpStatus.Ok, mmu.ZapRange(0, Pages));
            Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(21));
            bytes += FaultAll(vcpu, AccessType.Write); // 2 MiB leaves over level-1 tables: frozen, deferred, freed
            Assert.Equal(TdpStatus.Ok, mmu.ZapAll());
        }
        Assert.Equal(0, bytes);
        Assert.Equal(32, mmu.DeferredTablesFreed); // the replacement path ran in both rounds
        vcpu.Dispose();
        mmu.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    static long FaultAll(ConcurrentTdpVcpu<EptFormat, NoSchedulePoints> vcpu, AccessType type)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (ulong gfn = 0; gfn < Pages; gfn++)
        {
            if (vcpu.Access(gfn << 12, type).Access.Status != TdpAccessStatus.Mapped)
                return -1;
        }
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }

    /// <summary>Faults until the answer is not Retry (bounded), and checks it: the right host frame, a 4 KiB or 2 MiB leaf.</summary>
    static void Fault<TFormat, TSched>(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gfn, AccessType type, ref long retries,
        ref long faults, System.Collections.Concurrent.ConcurrentQueue<string> errors, bool allowHuge, bool mustBeHuge = false)
        where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint
    {
        ulong gpa = (gfn << 12) | 0x18;
        for (int attempt = 0; attempt < MaxRetries; attempt++)
        {
            TdpVcpuOutcome outcome = vcpu.Access(gpa, type);
            if (outcome.IsRetry)
            {
                Interlocked.Increment(ref retries);
                continue;
            }
            TdpAccessOutcome a = outcome.Access;
            bool sizeOk = mustBeHuge ? a.PageShift == 21 : a.PageShift == 12 || (allowHuge && a.PageShift == 21);
            if (a.Status != TdpAccessStatus.Mapped || a.Hpa != (((HostBase + gfn) << 12) | 0x18) || !sizeOk)
                errors.Enqueue($"vCPU {vcpu.Id}: {type} gfn 0x{gfn:X}: {a}");
            if (a.Faulted)
                Interlocked.Increment(ref faults);
            Interlocked.Increment(ref checkedAnswers);
            return;
        }
        errors.Enqueue($"vCPU {vcpu.Id}: gfn 0x{gfn:X} retried {MaxRetries} times");
    }

    /// <summary>Runs each body on its own thread, all released together (so they overlap), and waits for all.</summary>
    static void RunAll(List<Action> bodies)
    {
        using var start = new Barrier(bodies.Count);
        var threads = bodies.Select(body => new Thread(() =>
        {
            start.SignalAndWait();
            body();
        })).ToList();
        foreach (var t in threads)
            t.Start();
        foreach (var t in threads)
            t.Join();
    }
}
