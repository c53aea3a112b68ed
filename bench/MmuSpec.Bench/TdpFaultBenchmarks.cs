using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
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
        NativePageLeaks.DisposePool(_pool);
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

    /// <summary>
    /// The suite as process CPU time per access, without BenchmarkDotNet (<c>--fault-workload</c>): each size and
    /// order set up and checked as for the benchmarks, then 7 timed runs (faults after a zap, or hits), best and
    /// median. CPU time counts only this process, so it is steadier than a wall clock on a shared machine; it is
    /// the A/B figure for layout changes, not a replacement for a quiet BenchmarkDotNet run. A fault row also
    /// gives the cold populate: the same faults on a new VM and pool on a new thread (whose freed-run cache is
    /// empty), so every slab is fresh memory and its first touch a kernel page fault, as at a VM's boot.
    /// <paramref name="sizes"/> restricts the sizes (GiB: 1, 4, 16), all when empty.
    /// </summary>
    public static int RunWorkloadReport(TextWriter log, IReadOnlyCollection<int> sizes)
    {
        log.WriteLine($"# TdpFaultBenchmarks as CPU time per access; load average {File.ReadAllText("/proc/loadavg").Trim()}");
        log.WriteLine("GiB  order       kind   best ns  median ns  cold ns  slabs  huge kB  bytes allocated in 7 runs");
        foreach (int gib in new[] { 1, 4, 16 })
        {
            if (sizes.Count != 0 && !sizes.Contains(gib))
                continue;
            int pages = gib switch { 1 => Pages1G, 4 => Pages4G, _ => Pages16G };
            foreach (var order in new[] { PageOrder.Sequential, PageOrder.Shuffled })
                foreach (bool fault in new[] { true, false })
                {
                    var b = new TdpFaultBenchmarks { Order = order };
                    if (fault)
                        b.SetupFault(pages, () => b.Run(I.AccessType.Write));
                    else
                        b.SetupHit(pages);
                    var perAccess = new List<double>();
                    long allocated = 0;
                    for (int run = 0; run < 7; run++)
                    {
                        if (fault)
                            b.Empty();
                        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                        long bytes = GC.GetAllocatedBytesForCurrentThread();
                        ulong sum = b.Run(fault ? I.AccessType.Write : I.AccessType.Read);
                        allocated += GC.GetAllocatedBytesForCurrentThread() - bytes;
                        perAccess.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalNanoseconds / pages);
                        GC.KeepAlive(sum);
                    }
                    perAccess.Sort();
                    int slabs = ((TdpMmu<EptFormat>)b._vm).Slabs;
                    long hugeKiB = AnonHugePagesKiB();
                    b.Cleanup();
                    string cold = fault ? $"{ColdPopulate(pages, order),7:F2}" : "      -";
                    log.WriteLine($"{gib,3}  {order,-10}  {(fault ? "fault" : "hit"),-5}  {perAccess[0],7:F2}  {perAccess[3],9:F2}  {cold}  {slabs,5}  {hugeKiB,7}  {allocated}");
                }
        }
        log.WriteLine($"# load average at the end {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    // ---- helpers ----

    /// <summary>CPU ns per fault of one populate of a new VM from fresh memory (see <see cref="RunWorkloadReport"/>); checked by the hpa sum and the table count.</summary>
    static double ColdPopulate(int pages, PageOrder order)
    {
        double perFault = 0;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                var b = new TdpFaultBenchmarks { Order = order };
                b.Create(pages);
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                ulong sum = b.Run(I.AccessType.Write);
                perFault = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalNanoseconds / pages;
                ulong expected = 0;
                for (ulong page = 0; page < (ulong)pages; page++)
                    expected += (HostPfnBase + page) << 12;
                long tables = 2 + (pages >> 18) + (pages >> 9); // root, level 3, a level 2 per GiB, a level 1 per 2 MiB
                if (sum != expected || b._vm.TablePages != tables)
                    throw new InvalidOperationException($"cold populate: hpa sum {sum:X} (expected {expected:X}), {b._vm.TablePages} tables (expected {tables})");
                b.Cleanup();
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        if (failure is not null)
            throw new InvalidOperationException("cold populate failed", failure);
        return perFault;
    }

    /// <summary>The process's anonymous memory in transparent huge pages (kB; -1 where the kernel does not say).</summary>
    public static long AnonHugePagesKiB()
    {
        const string Path = "/proc/self/smaps_rollup", Key = "AnonHugePages:";
        if (!File.Exists(Path))
            return -1;
        foreach (string line in File.ReadLines(Path))
            if (line.StartsWith(Key, StringComparison.Ordinal))
                return long.Parse(line[Key.Length..].Trim().Split(' ')[0]);
        return -1;
    }

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
