using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Tdp;
using I = MmuSpec.Impl.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// The TDP range populate (<see cref="ITdpVm.PreFault"/>, KVM_PRE_FAULT_MEMORY) beside the floor it is
/// measured against, per 4 KiB mapping, over the 1 GiB slot of <see cref="TdpBenchmarks"/>:
/// <list type="bullet">
/// <item><b>LeafStore</b> (baseline): the same 262,144 leaf words stored into a flat, already touched
/// 2 MiB array, as radix_populate.c's "leaf-store floor" does (there the array is fresh each run).</item>
/// <item><b>PreFault4K</b>: one pre-fault of the whole GiB with the policy at 4 KiB, from an empty MMU
/// (an [IterationSetup] zaps it; the freed tables stay on the MMU's free list, so the populate reuses
/// them and never calls the pool). Includes the 513 tables it links and the per-run slot lookup.</item>
/// </list>
/// <item><b>ZapAllThenPreFault4K</b>: the same populate, timed together with the <c>ZapAll</c> before it
/// (the iteration setup populates instead): ZapAll clears every table it frees (515 zeroed pages, about 8 bytes
/// per mapping), which PreFault4K does not count. The difference is the zeroing and the tree walk.</item>
/// One invocation per iteration (the iteration setup), so each benchmark first runs itself until warm
/// (as <see cref="TdpBenchmarks"/> does) for at least <see cref="WarmUpRuns"/> runs and
/// <see cref="WarmUpTime"/>: the populate loop runs 512 times per call, so 40 quick runs ended before
/// tiered compilation replaced its first code (a 2026-12-04 run measured 8.4 ns per mapping that way;
/// the optimized loop takes about 1 ns). Setup checks that a populate maps every page as a read fault
/// would (hpa, 4 KiB, a hit afterwards).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class TdpPopulateBenchmarks
{
    const ulong SlotBaseGfn = TdpBenchmarks.SlotBaseGfn, SlotPages = TdpBenchmarks.SlotPages, HostPfnBase = TdpBenchmarks.HostPfnBase;
    const int Mappings = (int)SlotPages;
    const int WarmUpRuns = 40;
    static readonly TimeSpan WarmUpTime = TimeSpan.FromSeconds(2);

    // An EPT 4 KiB leaf's bits besides the frame (read, execute, write-back; writable), as the populate writes them.
    const ulong LeafBits = 0x1 | 0x2 | 0x4 | (6 << 3);

    NativePagePool _pool = null!;
    ITdpVm _vm = null!;
    ulong[] _flat = null!;

    [GlobalSetup]
    public void Setup()
    {
        _pool = new NativePagePool();
        _vm = TdpVm.Create(TdpFormatKind.Ept, null, _pool);
        if (_vm.CreateSlot(0, SlotBaseGfn, SlotPages, HostPfnBase, 30, readOnly: false) != SlotStatus.Ok)
            throw new InvalidOperationException($"impl: create slot rejected: {_vm.LastRejection}");
        _flat = GC.AllocateUninitializedArray<ulong>(Mappings, pinned: true);
        Reset();
        var o = _vm.PreFault(SlotBaseGfn << 12, SlotPages << 12);
        if (o.Status != TdpAccessStatus.Mapped || o.Bytes != SlotPages << 12)
            throw new InvalidOperationException($"impl: pre-fault gave {o}");
        for (ulong i = 0; i < SlotPages; i += 4099)
        {
            var hit = _vm.Access((SlotBaseGfn + i) << 12, I.AccessType.Read);
            if (hit.Status != TdpAccessStatus.Mapped || hit.Faulted || hit.PageShift != 12 || hit.Hpa != (HostPfnBase + i) << 12)
                throw new InvalidOperationException($"impl: page {i} after the pre-fault: {hit}");
        }
        Console.WriteLine($"// TDP pre-fault of 1 GiB in 4 KiB leaves: {_vm.TablePages} table pages");
        WarmUp(nameof(PreFault4K), Reset, () => PreFault4K());
        WarmUp(nameof(ZapAllThenPreFault4K), Populate, () => ZapAllThenPreFault4K());
        WarmUp(nameof(LeafStore), Reset, () => LeafStore());
        Reset();
    }

    void WarmUp(string name, Action reset, Func<object> body)
    {
        var total = Stopwatch.StartNew();
        double last = 0;
        int runs = 0;
        for (; runs < WarmUpRuns || total.Elapsed < WarmUpTime; runs++)
        {
            reset();
            long start = Stopwatch.GetTimestamp();
            GC.KeepAlive(body());
            last = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Console.WriteLine($"// TDP warm-up of {name}: {runs} runs in {total.Elapsed.TotalSeconds:F1} s; last run {last:F3} ms");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _pool.Dispose();
    }

    /// <summary>An empty MMU, 4 KiB policy (the slot stays). The store has nothing to reset; it gets the same
    /// setup so that both run one invocation per iteration and share a group.</summary>
    [IterationSetup(Targets = [nameof(LeafStore), nameof(PreFault4K)])]
    public void Reset()
    {
        if (_vm.ZapAll() != TdpStatus.Ok || _vm.SetMaxPageSize(12) != TdpStatus.Ok || _vm.TablePages != 0)
            throw new InvalidOperationException($"impl: could not empty the MMU: {_vm.LastRejection}");
    }

    /// <summary>The whole GiB mapped in 4 KiB leaves, for the zap that ZapAllThenPreFault4K times.</summary>
    [IterationSetup(Targets = [nameof(ZapAllThenPreFault4K)])]
    public void Populate()
    {
        Reset();
        if (_vm.PreFault(SlotBaseGfn << 12, SlotPages << 12).Bytes != SlotPages << 12 || _vm.TablePages != 515)
            throw new InvalidOperationException($"impl: the populate left {_vm.TablePages} table pages");
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Mappings), BenchmarkCategory("Populate1G")]
    public ulong LeafStore()
    {
        ulong[] flat = _flat;
        for (int i = 0; i < flat.Length; i++)
            flat[i] = ((HostPfnBase + (ulong)i) << 12) | LeafBits;
        return flat[Mappings / 2];
    }

    [Benchmark(OperationsPerInvoke = Mappings), BenchmarkCategory("Populate1G")]
    public ulong PreFault4K() => _vm.PreFault(SlotBaseGfn << 12, SlotPages << 12).Bytes;

    [Benchmark(OperationsPerInvoke = Mappings), BenchmarkCategory("Populate1G")]
    public ulong ZapAllThenPreFault4K()
    {
        _vm.ZapAll();
        _vm.SetMaxPageSize(12);
        return _vm.PreFault(SlotBaseGfn << 12, SlotPages << 12).Bytes;
    }
}
