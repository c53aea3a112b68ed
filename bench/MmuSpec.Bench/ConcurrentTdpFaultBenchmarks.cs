using BenchmarkDotNet.Attributes;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using I = MmuSpec.Impl.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// Issue 20's fault throughput: a write to every page of a 1 GiB slot at 4 KiB, sequential, from an empty
/// MMU (an [IterationSetup] zaps everything; slabs stay). Per access (OperationsPerInvoke).
/// <list type="bullet">
/// <item><b>SingleThreaded</b>: <see cref="TdpMmu{TFormat}"/> (the baseline, with its cached-leaf fast path).</item>
/// <item><b>Concurrent1Vcpu</b>: <see cref="ConcurrentTdpMmu{TFormat, TSched}"/>, one vCPU: the cost of the
/// read lock, the epoch and the compare-and-exchange.</item>
/// <item><b>Concurrent2Vcpus</b>: two threads, one vCPU each, alternate 2 MiB granules (shared upper tables).</item>
/// <item><b>Exclusive2Threads</b>: two threads on <see cref="TdpMmu{TFormat}"/> behind one exclusive lock:
/// what mmu_lock held for write would give.</item>
/// </list>
/// Multi-thread figures need a quiet machine with at least 2 free cores.
/// </summary>
[MemoryDiagnoser]
public class ConcurrentTdpFaultBenchmarks
{
    const ulong SlotBaseGfn = 0x40000, HostPfnBase = 0x100000;
    const int Pages = 1 << 18, Granule = 512;

    NativePagePool _pool = null!;
    TdpMmu<EptFormat> _single = null!;
    ConcurrentTdpMmu<EptFormat, NoSchedulePoints> _shared = null!;
    ConcurrentTdpVcpu<EptFormat, NoSchedulePoints> _v0 = null!, _v1 = null!;
    readonly object _exclusive = new();

    [GlobalSetup]
    public void Setup()
    {
        _pool = new NativePagePool();
        _single = new TdpMmu<EptFormat>(null, _pool);
        _shared = new ConcurrentTdpMmu<EptFormat, NoSchedulePoints>(null, _pool);
        _v0 = _shared.CreateVcpu();
        _v1 = _shared.CreateVcpu();
        if (_single.CreateSlot(0, SlotBaseGfn, Pages, HostPfnBase, 30, false) != SlotStatus.Ok
            || _shared.CreateSlot(0, SlotBaseGfn, Pages, HostPfnBase, 30, false) != SlotStatus.Ok)
            throw new InvalidOperationException("could not create the slot");
    }

    [IterationSetup]
    public void Empty()
    {
        if (_single.ZapAll() != TdpStatus.Ok || _single.SetMaxPageSize(12) != TdpStatus.Ok
            || _shared.ZapAll() != TdpStatus.Ok || _shared.SetMaxPageSize(12) != TdpStatus.Ok)
            throw new InvalidOperationException("could not empty the MMUs");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _v0.Dispose();
        _v1.Dispose();
        _single.Dispose();
        _shared.Dispose();
        NativePageLeaks.DisposePool(_pool);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Pages)]
    public ulong SingleThreaded()
    {
        ulong sum = 0;
        for (ulong i = 0; i < Pages; i++)
            sum += _single.Access((SlotBaseGfn + i) << 12, I.AccessType.Write).Hpa;
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong Concurrent1Vcpu() => FaultGranules(_v0, 0, 1);

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong Concurrent2Vcpus()
    {
        ulong other = 0;
        var t = new Thread(() => other = FaultGranules(_v1, 1, 2));
        t.Start();
        ulong mine = FaultGranules(_v0, 0, 2);
        t.Join();
        return mine + other;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong Exclusive2Threads()
    {
        ulong other = 0;
        var t = new Thread(() => other = ExclusiveGranules(1, 2));
        t.Start();
        ulong mine = ExclusiveGranules(0, 2);
        t.Join();
        return mine + other;
    }

    ulong FaultGranules(ConcurrentTdpVcpu<EptFormat, NoSchedulePoints> vcpu, int first, int step)
    {
        ulong sum = 0;
        for (int g = first; g < Pages / Granule; g += step)
        {
            for (ulong i = (ulong)g * Granule, end = i + Granule; i < end; i++)
            {
                TdpVcpuOutcome r;
                do
                    r = vcpu.Access((SlotBaseGfn + i) << 12, I.AccessType.Write);
                while (r.IsRetry);
                sum += r.Access.Hpa;
            }
        }
        return sum;
    }

    ulong ExclusiveGranules(int first, int step)
    {
        ulong sum = 0;
        for (int g = first; g < Pages / Granule; g += step)
        {
            for (ulong i = (ulong)g * Granule, end = i + Granule; i < end; i++)
            {
                lock (_exclusive)
                    sum += _single.Access((SlotBaseGfn + i) << 12, I.AccessType.Write).Hpa;
            }
        }
        return sum;
    }
}
