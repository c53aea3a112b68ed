using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Tdp;
using I = MmuSpec.Impl.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// The impl's single 4 KiB TDP fault and hit at the sizes issue 19 names (1, 4 and 16 GiB), in the C
/// reference's two orders (<c>radix_populate.c</c>: sequential, and a shuffle of every page), so the two
/// are compared size for size (run the reference with the page count: 262144, 1048576, 4194304).
/// One EPT VM, no shared bit, one memslot of the size at gfn <see cref="SlotBaseGfn"/>, policy 4 KiB.
/// <list type="bullet">
/// <item><b>Fault</b>: a write to every page of the slot, in the order, from an empty MMU (an
/// [IterationSetup] zaps everything; the slabs stay, as in <see cref="TdpBenchmarks"/>).</item>
/// <item><b>Hit</b>: a read of every page of a populated slot, in the order: no fault.</item>
/// </list>
/// Calls go through <see cref="ITdpVm"/>, as a VMM's would. Times are per access (OperationsPerInvoke).
/// OperationsPerInvoke is a constant, so each size is its own method. Impl only: the spec at 16 GiB
/// would take hours (its ratio is <see cref="TdpBenchmarks"/>'s).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class TdpFaultBenchmarks
{
    public enum PageOrder { Sequential, Shuffled }

    public const ulong SlotBaseGfn = 0x40000;
    public const ulong HostPfnBase = 0x100000;
    public const int Pages1G = 1 << 18, Pages4G = 1 << 20, Pages16G = 1 << 22;

    const int SlotId = 0;
    const byte Shift4K = 12, Shift1G = 30;

    [Params(PageOrder.Sequential, PageOrder.Shuffled)]
    public PageOrder Order { get; set; }

    NativePagePool _pool = null!;
    ITdpVm _vm = null!;
    uint[] _order = null!; // page indexes in the slot, in the access order

    // ---- setup and cleanup ----

    [GlobalSetup(Targets = [nameof(Fault1GiB)])] public void SetupFault1G() => SetupFault(Pages1G, () => Fault1GiB());
    [GlobalSetup(Targets = [nameof(Fault4GiB)])] public void SetupFault4G() => SetupFault(Pages4G, () => Fault4GiB());
    [GlobalSetup(Targets = [nameof(Fault16GiB)])] public void SetupFault16G() => SetupFault(Pages16G, () => Fault16GiB());
    [GlobalSetup(Targets = [nameof(Hit1GiB)])] public void SetupHit1G() => SetupHit(Pages1G);
    [GlobalSetup(Targets = [nameof(Hit4GiB)])] public void SetupHit4G() => SetupHit(Pages4G);
    [GlobalSetup(Targets = [nameof(Hit16GiB)])] public void SetupHit16G() => SetupHit(Pages16G);

    [IterationSetup(Targets = [nameof(Fault1GiB), nameof(Fault4GiB), nameof(Fault16GiB)])]
    public void Empty()
    {
        if (_vm.ZapAll() != TdpStatus.Ok || _vm.SetMaxPageSize(Shift4K) != TdpStatus.Ok || _vm.TablePages != 0)
            throw new InvalidOperationException($"impl: could not empty the MMU: {_vm.LastRejection}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _pool.Dispose();
        if (_pool.PagesInUse != 0)
            throw new InvalidOperationException($"native page leak: {_pool.PagesInUse} pages still in use after cleanup");
    }

    // ---- benchmarks ----

    [Benchmark(OperationsPerInvoke = Pages1G), BenchmarkCategory("Fault 1 GiB")] public ulong Fault1GiB() => Run(I.AccessType.Write);
    [Benchmark(OperationsPerInvoke = Pages4G), BenchmarkCategory("Fault 4 GiB")] public ulong Fault4GiB() => Run(I.AccessType.Write);
    [Benchmark(OperationsPerInvoke = Pages16G), BenchmarkCategory("Fault 16 GiB")] public ulong Fault16GiB() => Run(I.AccessType.Write);
    [Benchmark(OperationsPerInvoke = Pages1G), BenchmarkCategory("Hit 1 GiB")] public ulong Hit1GiB() => Run(I.AccessType.Read);
    [Benchmark(OperationsPerInvoke = Pages4G), BenchmarkCategory("Hit 4 GiB")] public ulong Hit4GiB() => Run(I.AccessType.Read);
    [Benchmark(OperationsPerInvoke = Pages16G), BenchmarkCategory("Hit 16 GiB")] public ulong Hit16GiB() => Run(I.AccessType.Read);

    ulong Run(I.AccessType type)
    {
        ITdpVm vm = _vm;
        uint[] order = _order;
        ulong sum = 0;
        for (int i = 0; i < order.Length; i++)
            sum += vm.Access((SlotBaseGfn + order[i]) << 12, type).Hpa;
        return sum;
    }

    // ---- helpers ----

    void Create(int pages)
    {
        _pool = new NativePagePool();
        _vm = TdpVm.Create(TdpFormatKind.Ept, null, _pool);
        if (_vm.CreateSlot(SlotId, SlotBaseGfn, (ulong)pages, HostPfnBase, Shift1G, readOnly: false) != SlotStatus.Ok
            || _vm.SetMaxPageSize(Shift4K) != TdpStatus.Ok)
            throw new InvalidOperationException($"impl: {_vm.LastRejection}");
        _order = new uint[pages];
        for (int i = 0; i < pages; i++)
            _order[i] = (uint)i;
        if (Order == PageOrder.Shuffled)
            new Random(1).Shuffle(_order); // a fixed seed: every run faults in the same order
    }

    /// <summary>
    /// Checks one populate (every access a 4 KiB fault at the expected hpa), then runs the benchmark until
    /// its code is warm: with one invocation per iteration, the quick job's warmup is too short for tiering.
    /// </summary>
    void SetupFault(int pages, Func<ulong> body)
    {
        Create(pages);
        foreach (uint page in _order)
            Expect(page, I.AccessType.Write, faulted: true);
        var total = Stopwatch.StartNew();
        int runs = 0;
        while ((runs < 20 || total.Elapsed < TimeSpan.FromSeconds(1)) && !(runs >= 3 && total.Elapsed >= TimeSpan.FromSeconds(6)))
        {
            Empty();
            GC.KeepAlive(body());
            runs++;
        }
        Console.WriteLine($"// TDP fault warm-up, {pages} pages {Order}: {runs} runs in {total.Elapsed.TotalSeconds:F1} s");
    }

    void SetupHit(int pages)
    {
        Create(pages);
        foreach (uint page in _order)
            Expect(page, I.AccessType.Write, faulted: true);
        foreach (uint page in _order)
            Expect(page, I.AccessType.Read, faulted: false);
    }

    void Expect(uint page, I.AccessType type, bool faulted)
    {
        ulong gpa = (SlotBaseGfn + page) << 12;
        var outcome = _vm.Access(gpa, type);
        if (outcome.Status != TdpAccessStatus.Mapped || outcome.Faulted != faulted || outcome.PageShift != Shift4K
            || outcome.Hpa != (HostPfnBase + page) << 12)
            throw new InvalidOperationException($"impl: {type} of gpa {gpa:X} gave {outcome}, expected a 4 KiB {(faulted ? "fault" : "hit")}");
    }
}
