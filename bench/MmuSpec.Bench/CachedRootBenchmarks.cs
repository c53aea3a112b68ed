using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Shadow;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using I = MmuSpec.Impl.Paging;
using ImplPolicy = MmuSpec.Impl.Shadow.ShadowRootPolicy;
using S = MmuSpec.Spec.Paging;
using SpecPolicy = MmuSpec.Spec.Shadow.ShadowRootPolicy;

namespace MmuSpec.Bench;

/// <summary>
/// MOV CR3 between cached roots (docs/shadow-model.md, "The cached roots", <c>GuestMovCr3</c>) in the spec
/// (<see cref="ShadowState.Step"/>) and the impl (<see cref="IShadowVm.GuestMovCr3"/>), on a 4-level guest
/// with CR4.PCIDE set and <see cref="Spaces"/> address spaces (<see cref="CachedRootGuest.Benchmark"/>): PML4
/// pages with PCIDs 1..5 that share one kernel subtree (PML4 entry 1: a PDPT, a directory and a page table
/// mapping 32 pages) and each have a private one (PML4 entry 3: 16 pages). Setup turns paging on in space 1
/// and then, in every space in turn, does a NOFLUSH MOV CR3 and reads every mapped page, so every shadow page
/// exists (one level-4 root page per space; the kernel's pages shared) and the cached roots are, most
/// recently used first, spaces 5 (current), 4, 3 and 2. Every benchmark starts from that state and ends in
/// it. Policy: the default (<see cref="ImplPolicy.KeepAndResync"/>); nothing here is unsync, so the policy
/// changes nothing.
/// <list type="bullet">
/// <item><b>CachedSwitch</b>: MOV CR3 with NOFLUSH alternately to spaces 4 and 5, <see cref="Switches"/>
/// times: each switch is a hit on previous root 0 (the two roots trade places; nothing else changes).</item>
/// <item><b>CachedSwitchFlush</b>: the same without NOFLUSH: each switch is the same hit, then the flush of
/// the new PCID syncs the current root (nothing is unsync, so the root page's unsync-children count says
/// there is nothing to do) and looks for previous roots with that PCID (there are none).</item>
/// <item><b>Miss</b>: MOV CR3 with NOFLUSH to spaces 1, 2, 3, 4, 5 in turn, <see cref="MissCycles"/> times
/// (<see cref="Misses"/> switches): with the current root and three previous ones cached, each target is the
/// space evicted four switches ago, so every switch misses, pushes the current root to the front, frees the
/// least recently used one and loads the target's root: the hash lookup finds its level-4 page, which still
/// exists, and the sync of the new root finds nothing unsync.</item>
/// </list>
/// Times are per MOV CR3 (OperationsPerInvoke); the spec runs the same sequence from the same state (it is
/// immutable, so every invocation restarts from it). No [IterationSetup]: every sequence returns the MMU to
/// where it started. Setup runs each sequence three times on both sides before measuring and checks every
/// switch: the result is Ok; the cached roots (pgd and unsync flag, current then previous) are the expected
/// LRU order on both sides (a hit: [old previous 0, old current, old previous 1, old previous 2]; a miss:
/// [target, old current, old previous 0, old previous 1]); the impl's <see cref="IShadowVm.RootStats"/> moved
/// by exactly one cached switch (hit) or one build and one free (miss) and created no page; neither side's
/// page count changed; no page is unsync. It then checks that a warm run of the impl sequence allocates
/// nothing (<see cref="GC.GetAllocatedBytesForCurrentThread"/>). The spec is the baseline of each category.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class CachedRootBenchmarks : ImplVsSpecBenchmark
{
    /// <summary>Address spaces (PCIDs 1..5): one more than the cached roots (current + 3 previous).</summary>
    public const int Spaces = 5;

    /// <summary>MOV CR3s per invocation of the two hit benchmarks (spaces 4, 5, 4, 5, ..).</summary>
    public const int Switches = 64;

    /// <summary>Rounds of spaces 1..5 per invocation of <see cref="ImplMiss"/>.</summary>
    public const int MissCycles = 8;

    /// <summary>MOV CR3s per invocation of the miss benchmarks.</summary>
    public const int Misses = MissCycles * Spaces;

    CachedRootGuest _guest = null!;
    NativePagePool _pool = null!;
    CachedRootRig _rig = null!;
    IShadowVm _vm = null!;
    ShadowState _specStart = null!;

    // The impl's operands, in order; the spec's operations, the same.
    ulong[] _switchNoFlush = null!, _switchFlush = null!, _missNoFlush = null!;
    ShadowOp[] _specSwitchNoFlush = null!, _specSwitchFlush = null!, _specMiss = null!;

    [GlobalSetup]
    public void Setup()
    {
        _guest = CachedRootGuest.Benchmark();
        _pool = new NativePagePool();
        _rig = new CachedRootRig(_guest, ImplPolicy.KeepAndResync, _pool, withSpec: true);
        _rig.Populate();
        _vm = _rig.Vm;
        _specStart = _rig.Spec!;

        var spaces = _guest.Spaces;
        ulong cr3A = spaces[3].Cr3, cr3B = spaces[4].Cr3; // spaces 4 and 5: current and previous 0 after the populate
        _switchFlush = Enumerable.Range(0, Switches).Select(i => i % 2 == 0 ? cr3A : cr3B).ToArray();
        _switchNoFlush = _switchFlush.Select(c => c | ShadowOp.GuestMovCr3.NoFlush).ToArray();
        _missNoFlush = Enumerable.Range(0, Misses).Select(i => spaces[i % Spaces].Cr3 | ShadowOp.GuestMovCr3.NoFlush).ToArray();
        _specSwitchNoFlush = SpecOps(_switchNoFlush);
        _specSwitchFlush = SpecOps(_switchFlush);
        _specMiss = SpecOps(_missNoFlush);

        long pages = _vm.ShadowPages;
        _rig.CheckRootsAgree("after the populate");
        if (!CachedRootRig.Pgds(_specStart.Roots).SequenceEqual([spaces[4].Cr3, spaces[3].Cr3, spaces[2].Cr3, spaces[1].Cr3]))
            throw new InvalidOperationException($"after the populate the cached roots are {_specStart.Roots}, expected spaces 5, 4, 3, 2");

        for (int round = 0; round < 3; round++)
        {
            CheckSequence(_switchNoFlush, hit: true, pages, $"CachedSwitch round {round}");
            CheckSequence(_switchFlush, hit: true, pages, $"CachedSwitchFlush round {round}");
            CheckSequence(_missNoFlush, hit: false, pages, $"Miss round {round}");
        }
        CheckNoAllocation(nameof(ImplCachedSwitch), () => ImplCachedSwitch());
        CheckNoAllocation(nameof(ImplCachedSwitchFlush), () => ImplCachedSwitchFlush());
        CheckNoAllocation(nameof(ImplMiss), () => ImplMiss());
        if (!CachedRootRig.Pgds(_rig.Spec!.Roots).SequenceEqual(CachedRootRig.Pgds(_specStart.Roots)))
            throw new InvalidOperationException("the checked sequences did not return the spec to its start");
        Console.WriteLine(
            $"// CachedRoot: {Spaces} address spaces, {_guest.Spaces[0].Mappings.Length} mappings each, {pages} shadow pages; " +
            $"ShadowVm.RootInfoBytes = {ShadowVm.RootInfoBytes}; stats after setup {_vm.RootStats}");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _rig.Dispose();
        NativePageLeaks.DisposePool(_pool);
    }

    // ---- benchmarks ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Switches), BenchmarkCategory("CachedSwitch")]
    public ShadowState SpecCachedSwitch() => RunSpec(_specSwitchNoFlush);

    [Benchmark(OperationsPerInvoke = Switches), BenchmarkCategory("CachedSwitch")]
    public int ImplCachedSwitch() => RunImpl(_switchNoFlush);

    [Benchmark(Baseline = true, OperationsPerInvoke = Switches), BenchmarkCategory("CachedSwitchFlush")]
    public ShadowState SpecCachedSwitchFlush() => RunSpec(_specSwitchFlush);

    [Benchmark(OperationsPerInvoke = Switches), BenchmarkCategory("CachedSwitchFlush")]
    public int ImplCachedSwitchFlush() => RunImpl(_switchFlush);

    [Benchmark(Baseline = true, OperationsPerInvoke = Misses), BenchmarkCategory("Miss")]
    public ShadowState SpecMiss() => RunSpec(_specMiss);

    [Benchmark(OperationsPerInvoke = Misses), BenchmarkCategory("Miss")]
    public int ImplMiss() => RunImpl(_missNoFlush);

    // ---- helpers ----

    ShadowState RunSpec(ShadowOp[] ops)
    {
        ShadowState state = _specStart;
        foreach (ShadowOp op in ops)
            state = state.Step(op).State;
        return state;
    }

    int RunImpl(ulong[] operands)
    {
        IShadowVm vm = _vm;
        int ok = 0;
        foreach (ulong cr3 in operands)
            ok += (int)vm.GuestMovCr3(cr3).Status;
        return ok;
    }

    static ShadowOp[] SpecOps(ulong[] operands) => operands.Select(c => (ShadowOp)new ShadowOp.GuestMovCr3(c)).ToArray();

    /// <summary>
    /// Runs <paramref name="operands"/> on both sides (the spec from <see cref="_specStart"/>), checking every
    /// switch as the class comment says; both sides must end where they started.
    /// </summary>
    void CheckSequence(ulong[] operands, bool hit, long pages, string what)
    {
        ShadowState spec = _specStart;
        for (int i = 0; i < operands.Length; i++)
        {
            ulong target = operands[i] & ~ShadowOp.GuestMovCr3.NoFlush;
            var before = CachedRootRig.Pgds(spec.Roots);
            ulong[] expected = hit
                ? [before[1], before[0], before[2], before[3]]
                : [target, before[0], before[1], before[2]];
            if (hit ? before[1] != target : before.Contains(target))
                throw new InvalidOperationException($"{what}, switch {i}: the sequence does not do what it claims (roots {spec.Roots}, target {target:X})");

            var stats = _vm.RootStats;
            var (after, result) = spec.Step(new ShadowOp.GuestMovCr3(operands[i]));
            if (result is not VmResult.Ok)
                throw new InvalidOperationException($"spec ({what}, switch {i}): {result}");
            ShadowRig.ImplOk(_vm.GuestMovCr3(operands[i]), $"{what}, switch {i}", _vm);
            var delta = CachedRootRig.Delta(_vm.RootStats, stats);
            var expectedDelta = hit ? new ShadowRootStats(0, 1, 0, 0, 0) : new ShadowRootStats(1, 0, 0, 1, 0);
            if (delta != expectedDelta)
                throw new InvalidOperationException($"impl ({what}, switch {i}): root stats moved by {delta}, expected {expectedDelta} ({(hit ? "a hit" : "a miss")})");
            if (!CachedRootRig.Pgds(after.Roots).SequenceEqual(expected) || after.Roots.All.Any(r => r.Unsync))
                throw new InvalidOperationException($"spec ({what}, switch {i}): roots {after.Roots}, expected pgds {string.Join(", ", expected.Select(p => p.ToString("X")))}, none unsync");
            spec = after;
            _rig.Spec = spec;
            _rig.CheckRootsAgree($"{what}, switch {i}");
            if (_vm.ShadowPages != pages || spec.Pages.Count != pages || spec.Pages.Values.Any(p => p.Unsync))
                throw new InvalidOperationException($"{what}, switch {i}: pages impl {_vm.ShadowPages}, spec {spec.Pages.Count}, expected {pages}, none unsync");
        }
        if (!CachedRootRig.Pgds(spec.Roots).SequenceEqual(CachedRootRig.Pgds(_specStart.Roots)))
            throw new InvalidOperationException($"{what}: the sequence does not end where it started ({spec.Roots})");
    }

    static void CheckNoAllocation(string name, Func<int> body)
    {
        for (int i = 0; i < 100; i++)
            body();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++)
            body();
        long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        if (bytes != 0)
            throw new InvalidOperationException($"impl: {name} allocated {bytes} B in 10 warm invocations");
    }

}

/// <summary>
/// The whole multi-address-space workload (<see cref="CachedRootWorkload"/>: 8 address spaces, PCIDs 1..8,
/// <see cref="CachedRootWorkload.Length"/> random operations after a populate) per root policy, spec against
/// impl. Each invocation runs the workload's operations from the populated state: the impl on a fresh VM
/// (created and populated by an [IterationSetup] on the class's pool, outside the timing; BDN then runs one
/// invocation per iteration, and each benchmark gets a JIT warm-up, <see cref="CachedRootWarmUp"/>: the impl's
/// workload needs about a second of runs to reach tier-1 code, and with <see cref="ShadowWarmUp"/>'s 1 s minimum
/// BDN measured tier-0 code), the spec from its populated state (immutable; an empty [IterationSetup] keeps it in
/// the same job group). Time per
/// operation (OperationsPerInvoke = the workload's length). Setup runs the workload on both sides under the
/// policy and checks that every result agrees (and the cached roots after every operation), then re-runs the
/// impl twice on fresh VMs and checks every outcome and the root statistics against the checked run.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByParams, BenchmarkLogicalGroupRule.ByCategory)]
public class CachedRootWorkloadBenchmarks : ImplVsSpecBenchmark
{
    public const int Ops = CachedRootWorkload.Length;

    [Params(ImplPolicy.Upstream, ImplPolicy.KeepAndResync)]
    public ImplPolicy Policy { get; set; }

    CachedRootWorkload _workload = null!;
    NativePagePool _pool = null!;
    CachedRootRig? _rig;
    ShadowState _specStart = null!;
    ShadowOp[] _specOps = null!;
    ShadowOutcome[] _expected = null!;
    ShadowRootStats _expectedStats;

    [GlobalSetup(Target = nameof(SpecWorkload))]
    public void SetupSpec()
    {
        Setup();
        CachedRootWarmUp.Run($"{nameof(SpecWorkload)} ({Policy})", () => { }, () => SpecWorkload(), Console.Out, minRuns: 40);
    }

    [GlobalSetup(Target = nameof(ImplWorkload))]
    public void SetupImpl()
    {
        Setup();
        CachedRootWarmUp.Run($"{nameof(ImplWorkload)} ({Policy})", FreshImpl, () => ImplWorkload(), Console.Out, minRuns: 300);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _rig?.Dispose();
        NativePageLeaks.DisposePool(_pool);
    }

    /// <summary>A fresh impl VM, populated: where every measured invocation starts.</summary>
    [IterationSetup(Target = nameof(ImplWorkload))]
    public void FreshImpl()
    {
        _rig?.Dispose();
        _rig = null;
        _rig = new CachedRootRig(_workload.Guest, Policy, _pool, withSpec: false);
        _rig.Populate();
    }

    /// <summary>Nothing to do (the spec is immutable); declared so the spec runs like the impl and shares its job group.</summary>
    [IterationSetup(Target = nameof(SpecWorkload))]
    public void EmptySpec() { }

    [Benchmark(Baseline = true, OperationsPerInvoke = Ops), BenchmarkCategory("Workload")]
    public ShadowState SpecWorkload()
    {
        ShadowState state = _specStart;
        foreach (ShadowOp op in _specOps)
            state = state.Step(op).State;
        return state;
    }

    [Benchmark(OperationsPerInvoke = Ops), BenchmarkCategory("Workload")]
    public ulong ImplWorkload()
    {
        IShadowVm vm = _rig!.Vm;
        ulong sum = 0;
        foreach (ref readonly CachedRootOp op in _workload.Ops.AsSpan())
            sum += op.Apply(vm).Hpa;
        return sum;
    }

    void Setup()
    {
        _workload = CachedRootWorkload.Generate();
        _pool = new NativePagePool();
        var run = CachedRootWorkload.RunChecked(_workload, Policy, _pool);
        if (run.Disagreements.Count != 0)
            throw new InvalidOperationException($"{Policy}: spec and impl disagree on the workload:{Environment.NewLine}{string.Join(Environment.NewLine, run.Disagreements)}");
        _specStart = run.SpecStart;
        _specOps = _workload.Ops.Select(o => o.ToSpec()).ToArray();
        _expected = run.ImplOutcomes;
        _expectedStats = run.Stats;

        // The measured path: a fresh VM, populated, then the operations; twice, every outcome and the stats checked.
        for (int round = 0; round < 2; round++)
        {
            FreshImpl();
            var vm = _rig!.Vm;
            var start = vm.RootStats;
            for (int i = 0; i < _workload.Ops.Length; i++)
            {
                var outcome = _workload.Ops[i].Apply(vm);
                if (outcome != _expected[i])
                    throw new InvalidOperationException($"impl ({Policy}, round {round}), op {i} {_workload.Ops[i]}: {outcome}, the checked run gave {_expected[i]}");
            }
            var stats = CachedRootRig.Delta(vm.RootStats, start);
            if (stats != _expectedStats)
                throw new InvalidOperationException($"impl ({Policy}, round {round}): stats {stats}, the checked run gave {_expectedStats}");
        }
        Console.WriteLine($"// CachedRoot workload ({Policy}): {Ops} operations, {_workload.Guest.Spaces.Count} address spaces; root stats over the operations {_expectedStats}");
    }

}

/// <summary>
/// A 4-level guest with several address spaces (PML4 pages) that share subtrees, as plain data: the entry
/// writes (applied to both sides with <c>GuestStore</c> before paging is on) and, per space, its CR3 (PML4
/// gpa | PCID, PCID = space index + 1) and its mappings. A subtree is a PDPT (entry 1) -> a page directory
/// (entries 2..) -> page tables, each mapping a run of 4 KiB data frames; a PML4 entry of every space that
/// uses a subtree instance links the same PDPT, so those spaces share its tables (and, as every entry has
/// the same rights, its shadow pages). Every table entry has P, R/W, U/S and A, every leaf also D. Each
/// mapping also owns an alternate data frame, which the workload's stores remap it to. One writable slot
/// holds tables (from gfn <see cref="SlotBaseGfn"/>) and data (from <see cref="DataBaseGfn"/>).
/// </summary>
public sealed class CachedRootGuest
{
    public const ulong SlotBaseGfn = 0x100, DataBaseGfn = 0x1000, HostPfnBase = 0x10_0000;
    public const int SlotId = 0;
    public const ulong P = 1UL << 0, Rw = 1UL << 1, Us = 1UL << 2, A = 1UL << 5, D = 1UL << 6;
    public const ulong TableFlags = P | Rw | Us | A, LeafFlags = TableFlags | D;

    /// <summary>A subtree under PML4 entry <paramref name="Pml4Index"/>; <paramref name="Instance"/>: which instance space s uses.</summary>
    public sealed record SubtreeKind(string Name, int Pml4Index, int LeafTables, int PagesPerTable, Func<int, int> Instance);

    /// <summary>A mapped page: its gva, its leaf entry, and its data frames (the alternate for remapping stores).</summary>
    public sealed record Mapping(ulong Gva, ulong LeafEntryGpa, ulong DataGfn, ulong AltDataGfn)
    {
        public ulong LeafValue => (DataGfn << 12) | LeafFlags;
        public ulong AltLeafValue => (AltDataGfn << 12) | LeafFlags;
    }

    public sealed record Space(int Index, ulong Pml4Gpa, Mapping[] Mappings)
    {
        public ulong Pcid => (ulong)Index + 1;
        public ulong Cr3 => Pml4Gpa | Pcid;
    }

    public CachedRootGuest(int spaces, IReadOnlyList<SubtreeKind> kinds)
    {
        ulong nextTable = SlotBaseGfn, nextData = DataBaseGfn;
        var writes = new List<EntryWrite>();
        var pml4s = Enumerable.Range(0, spaces).Select(_ => nextTable++ << 12).ToArray();
        var mappings = Enumerable.Range(0, spaces).Select(_ => new List<Mapping>()).ToArray();
        var leafTables = new List<ulong>();
        foreach (var kind in kinds)
        {
            var instances = new Dictionary<int, (ulong Pdpt, List<Mapping> Maps)>();
            for (int s = 0; s < spaces; s++)
            {
                int instance = kind.Instance(s);
                if (!instances.TryGetValue(instance, out var sub))
                {
                    ulong pdpt = nextTable++ << 12, pd = nextTable++ << 12;
                    writes.Add(new EntryWrite(pdpt + 1 * 8, pd | TableFlags, 8));
                    var maps = new List<Mapping>();
                    for (int t = 0; t < kind.LeafTables; t++)
                    {
                        ulong pt = nextTable++ << 12;
                        leafTables.Add(pt >> 12);
                        int pdIndex = 2 + t;
                        writes.Add(new EntryWrite(pd + (ulong)pdIndex * 8, pt | TableFlags, 8));
                        for (int j = 0; j < kind.PagesPerTable; j++)
                        {
                            int pteIndex = 5 + j;
                            ulong gva = ((ulong)kind.Pml4Index << 39) | (1UL << 30) | ((ulong)pdIndex << 21) | ((ulong)pteIndex << 12)
                                | (((ulong)j * 0x48 + 0x10) & 0xFFF);
                            var m = new Mapping(gva, pt + (ulong)pteIndex * 8, nextData, nextData + 1);
                            nextData += 2;
                            writes.Add(new EntryWrite(m.LeafEntryGpa, m.LeafValue, 8));
                            maps.Add(m);
                        }
                    }
                    if (nextTable > DataBaseGfn)
                        throw new InvalidOperationException("guest tables overflow into the data frames");
                    sub = (pdpt, maps);
                    instances.Add(instance, sub);
                }
                writes.Add(new EntryWrite(pml4s[s] + (ulong)kind.Pml4Index * 8, sub.Pdpt | TableFlags, 8));
                mappings[s].AddRange(sub.Maps);
            }
        }
        Spaces = Enumerable.Range(0, spaces).Select(s => new Space(s, pml4s[s], [.. mappings[s]])).ToArray();
        Writes = writes;
        LeafTableGfns = leafTables;
        TablePages = (int)(nextTable - SlotBaseGfn);
        SlotPages = nextData - SlotBaseGfn;
    }

    /// <summary><see cref="CachedRootBenchmarks"/>' guest: 5 spaces; a kernel subtree shared by all (1 table, 32 pages), a private one each (16 pages).</summary>
    public static CachedRootGuest Benchmark() => new(CachedRootBenchmarks.Spaces,
    [
        new SubtreeKind("kernel", 1, 1, 32, _ => 0),
        new SubtreeKind("private", 3, 1, 16, s => s),
    ]);

    /// <summary>
    /// The workload's guest: 8 spaces; a kernel subtree shared by all (2 tables of 16 pages), a "library"
    /// subtree shared by spaces 1-3, 4-6 and 7-8 (1 table of 16), and a private one each (1 table of 16).
    /// </summary>
    public static CachedRootGuest Workload() => new(CachedRootWorkload.Spaces,
    [
        new SubtreeKind("kernel", 1, 2, 16, _ => 0),
        new SubtreeKind("library", 2, 1, 16, s => s / 3),
        new SubtreeKind("private", 3, 1, 16, s => s),
    ]);

    public IReadOnlyList<Space> Spaces { get; }
    public IReadOnlyList<EntryWrite> Writes { get; }
    public IReadOnlyList<ulong> LeafTableGfns { get; }
    public int TablePages { get; }
    public ulong SlotPages { get; }

    public static ulong Hpa(ulong gpa) => ((HostPfnBase + (gpa >> 12) - SlotBaseGfn) << 12) | (gpa & 0xFFF);
}

/// <summary>
/// One shadow VM per side with the same <see cref="CachedRootGuest"/>: the impl on a given pool with a root
/// policy, and optionally the spec (<see cref="Spec"/>, the current state) with the same policy. MAXPHYADDR
/// 46, allowUnsync, the slot created, the tables stored, 4-level paging (CR0.WP, CR4.PSE, EFER.NXE) with
/// CR4.PCIDE on in space 1. Checking helpers throw on anything unexpected.
/// </summary>
internal sealed class CachedRootRig : IDisposable
{
    public const int MaxPhyAddr = 46;

    public CachedRootRig(CachedRootGuest guest, ImplPolicy policy, NativePagePool pool, bool withSpec)
    {
        Guest = guest;
        Vm = ShadowVm.Create(MaxPhyAddr, allowUnsync: true, pool, policy);
        ShadowRig.ImplOk(Vm.CreateSlot(CachedRootGuest.SlotId, CachedRootGuest.SlotBaseGfn, guest.SlotPages, CachedRootGuest.HostPfnBase, readOnly: false), "create slot", Vm);
        foreach (var w in guest.Writes)
            ShadowRig.ImplOk(Vm.GuestStore(w.Gpa, w.Value, w.Size), $"table store at gpa {w.Gpa:X}", Vm);
        ShadowRig.ImplOk(Vm.GuestSetPaging(ImplControls, guest.Spaces[0].Cr3, pcide: true), "GuestSetPaging", Vm);
        if (!withSpec)
            return;
        var spec = ShadowState.Create(new ShadowConfig(MaxPhyAddr, allowUnsync: true, SpecPolicyOf(policy)));
        spec = ShadowRig.ExpectOk(spec, new ShadowOp.CreateSlot(CachedRootGuest.SlotId, CachedRootGuest.SlotBaseGfn, guest.SlotPages, CachedRootGuest.HostPfnBase, ReadOnly: false));
        foreach (var w in guest.Writes)
            spec = ShadowRig.ExpectOk(spec, new ShadowOp.GuestStore(w.Gpa, w.Value, w.Size));
        Spec = ShadowRig.ExpectOk(spec, new ShadowOp.GuestSetPaging(SpecControls, guest.Spaces[0].Cr3, Pcide: true));
    }

    public CachedRootGuest Guest { get; }
    public IShadowVm Vm { get; }
    public ShadowState? Spec { get; set; }

    public static I.PagingControls ImplControls { get; } = new(I.PagingMode.Long4,
        Cr0Wp: true, Cr4Pse: true, Cr4Smep: false, Cr4Smap: false, Cr4Pke: false,
        EferNxe: true, EflagsAc: false, Pkru: 0, MaxPhyAddr: MaxPhyAddr);

    public static S.PagingControls SpecControls { get; } = new(S.PagingMode.Long4, cr0Wp: true, cr4Pse: true, eferNxe: true, maxPhyAddr: MaxPhyAddr);

    public static SpecPolicy SpecPolicyOf(ImplPolicy policy) => policy switch
    {
        ImplPolicy.Upstream => SpecPolicy.Upstream,
        ImplPolicy.KeepAndResync => SpecPolicy.KeepAndResync,
        _ => throw new ArgumentOutOfRangeException(nameof(policy), policy, null),
    };

    /// <summary>
    /// The populate: in every space in turn, a NOFLUSH MOV CR3 and a read of every mapping, on both sides (the
    /// spec if there is one): every MOV CR3 Ok, every read the mapping's translation, both sides agreeing.
    /// </summary>
    public void Populate()
    {
        foreach (var space in Guest.Spaces)
        {
            Run(CachedRootOp.MovCr3(space.Cr3 | ShadowOp.GuestMovCr3.NoFlush), null);
            foreach (var m in space.Mappings)
                Run(CachedRootOp.Read(m.Gva), m);
        }

        void Run(CachedRootOp op, CachedRootGuest.Mapping? read)
        {
            var outcome = op.Apply(Vm);
            ulong gpa = read is null ? 0 : (read.DataGfn << 12) | (read.Gva & 0xFFF);
            if (read is null ? outcome.Status != ShadowStatus.Ok
                : outcome.Status != ShadowStatus.Translated || outcome.Gpa != gpa || outcome.Hpa != CachedRootGuest.Hpa(gpa))
                throw new InvalidOperationException($"impl (populate): {op} gave {outcome} {Vm.LastRejection}");
            if (Spec is null)
                return;
            var (after, result) = Spec.Step(op.ToSpec());
            if (CachedRootOp.Describe(result) != CachedRootOp.Describe(outcome))
                throw new InvalidOperationException($"populate: {op}: spec {result}, impl {outcome}");
            Spec = after;
        }
    }

    /// <summary>The spec's cached roots and the impl's are the same (pgd, unsync flag, pages), in order.</summary>
    public void CheckRootsAgree(string when)
    {
        string spec = DescribeRoots(Spec!.Roots), impl = DescribeRoots(Vm);
        if (spec != impl)
            throw new InvalidOperationException($"{when}: cached roots: spec {spec}; impl {impl}");
    }

    public static string DescribeRoots(ShadowRoots roots) =>
        $"current {Root(roots.Current?.Pgd, roots.Current?.Unsync, roots.Current?.Root.Pages.Select(k => k?.Gfn))}; previous [" +
        string.Join(", ", roots.Previous.Select(r => Root(r.Pgd, r.Unsync, r.Root.Pages.Select(k => k?.Gfn)))) + "]";

    public static string DescribeRoots(IShadowVm vm) =>
        $"current {Root(vm.CurrentRoot?.Pgd, vm.CurrentRoot?.Unsync, vm.CurrentRoot?.Pages.Select(k => k?.Gfn))}; previous [" +
        string.Join(", ", vm.PreviousRoots.Select(r => Root(r.Pgd, r.Unsync, r.Pages.Select(k => k?.Gfn)))) + "]";

    static string Root(ulong? pgd, bool? unsync, IEnumerable<ulong?>? pages) => pgd is null
        ? "none"
        : $"{pgd:X}{(unsync == true ? " unsync" : "")} ({string.Join(" ", pages!.Select(g => g is { } x ? x.ToString("X") : "-"))})";

    /// <summary>The pgds of the current root (0 if none) and the previous ones, most recently used first.</summary>
    public static ulong[] Pgds(ShadowRoots roots) => [roots.Current?.Pgd ?? 0, .. roots.Previous.Select(r => r.Pgd)];

    public static ShadowRootStats Delta(ShadowRootStats after, ShadowRootStats before) => new(
        after.Builds - before.Builds, after.CachedSwitches - before.CachedSwitches, after.Resyncs - before.Resyncs,
        after.Freed - before.Freed, after.PagesCreated - before.PagesCreated);

    public void Dispose() => Vm.Dispose();
}

public enum CachedRootOpKind : byte { MovCr3, Read, Write, Store, Invpcid, Invlpg, FlushTlb }

/// <summary>
/// One guest operation of the workload, in a compact form both sides run: MOV CR3 (A = operand), a user-mode
/// read or write (A = gva), an 8-byte store (A = gpa, B = value), INVPCID (A = type, B = pcid, C = gva),
/// INVLPG (A = gva), a TLB flush.
/// </summary>
public readonly record struct CachedRootOp(CachedRootOpKind Kind, ulong A, ulong B, ulong C)
{
    public static CachedRootOp MovCr3(ulong operand) => new(CachedRootOpKind.MovCr3, operand, 0, 0);
    public static CachedRootOp Read(ulong gva) => new(CachedRootOpKind.Read, gva, 0, 0);
    public static CachedRootOp Write(ulong gva) => new(CachedRootOpKind.Write, gva, 0, 0);
    public static CachedRootOp Store(ulong gpa, ulong value) => new(CachedRootOpKind.Store, gpa, value, 0);
    public static CachedRootOp Invpcid(ulong type, ulong pcid, ulong gva) => new(CachedRootOpKind.Invpcid, type, pcid, gva);
    public static CachedRootOp Invlpg(ulong gva) => new(CachedRootOpKind.Invlpg, gva, 0, 0);
    public static CachedRootOp FlushTlb() => new(CachedRootOpKind.FlushTlb, 0, 0, 0);

    public ShadowOutcome Apply(IShadowVm vm) => Kind switch
    {
        CachedRootOpKind.MovCr3 => vm.GuestMovCr3(A),
        CachedRootOpKind.Read => vm.GuestAccess(A, I.AccessType.Read, I.Privilege.User),
        CachedRootOpKind.Write => vm.GuestAccess(A, I.AccessType.Write, I.Privilege.User),
        CachedRootOpKind.Store => vm.GuestStore(A, B, sizeof(ulong)),
        CachedRootOpKind.Invpcid => vm.Invpcid(A, B, C),
        CachedRootOpKind.Invlpg => vm.Invlpg(A),
        _ => vm.FlushTlb(),
    };

    public ShadowOp ToSpec() => Kind switch
    {
        CachedRootOpKind.MovCr3 => new ShadowOp.GuestMovCr3(A),
        CachedRootOpKind.Read => new ShadowOp.GuestAccess(new S.Access(A, S.AccessType.Read, S.Privilege.User)),
        CachedRootOpKind.Write => new ShadowOp.GuestAccess(new S.Access(A, S.AccessType.Write, S.Privilege.User)),
        CachedRootOpKind.Store => new ShadowOp.GuestStore(A, B, sizeof(ulong)),
        CachedRootOpKind.Invpcid => new ShadowOp.Invpcid(A, B, C),
        CachedRootOpKind.Invlpg => new ShadowOp.Invlpg(A),
        _ => new ShadowOp.FlushTlb(),
    };

    public override string ToString() => ToSpec().ToString();

    /// <summary>A result as both sides can say it: ok, rejected, a translation (gpa, hpa, faulted or hit), an MMIO exit, #PF with its error code, #GP.</summary>
    public static string Describe(VmResult result) => result switch
    {
        VmResult.Ok => "ok",
        VmResult.Rejected => "rejected",
        ShadowResult.Translated t => Translated(t.Gpa, t.Hpa, t.Faulted),
        ShadowResult.MmioExit m => $"mmio exit {m.Gpa:X}",
        ShadowResult.GuestFault { Fault: WalkResult.PageFault pf } => $"#PF {(uint)pf.ErrorCode:X}",
        ShadowResult.GuestFault { Fault: WalkResult.GeneralProtection } => "#GP",
        _ => result.ToString(),
    };

    public static string Describe(ShadowOutcome outcome) => outcome.Status switch
    {
        ShadowStatus.Ok => "ok",
        ShadowStatus.Rejected => "rejected",
        ShadowStatus.Translated => Translated(outcome.Gpa, outcome.Hpa, outcome.Faulted),
        ShadowStatus.MmioExit => $"mmio exit {outcome.Gpa:X}",
        ShadowStatus.GuestFault when outcome.Fault.Status == I.WalkStatus.PageFault => $"#PF {outcome.Fault.ErrorCode:X}",
        ShadowStatus.GuestFault when outcome.Fault.Status == I.WalkStatus.GeneralProtection => "#GP",
        _ => outcome.ToString(),
    };

    static string Translated(ulong gpa, ulong hpa, bool faulted) => $"translated gpa {gpa:X} hpa {hpa:X} {(faulted ? "faulted" : "hit")}";
}

/// <summary>
/// A deterministic random multi-address-space workload for the cached roots (<see cref="CachedRootGuest.Workload"/>:
/// 8 spaces, PCIDs 1..8, sharing kernel and library tables), run after the rig's populate (which leaves space 8
/// current and 7, 6, 5 previous). <see cref="Length"/> operations from a SplitMix64 stream (<see cref="Seed"/>):
/// <list type="bullet">
/// <item>15 %: MOV CR3, 85 % with NOFLUSH; the target is, 3 times in 4, one of the three most recently used other
/// spaces, else any space (the current one included);</item>
/// <item>41 %: a user read of one of the current space's mappings; 10 %: a user write;</item>
/// <item>13 %: an 8-byte store to a leaf page-table entry (70 % one of the current space's mappings, else any
/// space's): the original mapping (50 %), the mapping of its alternate frame (35 %) or not present (15 %). A
/// store into a table shadowed by a sync level-1 page unsyncs that page;</item>
/// <item>8 %: INVPCID single context of a PCID other than the current one; 3 %: INVPCID individual address
/// (a mapping of a random space, in that space's PCID);</item>
/// <item>8 %: INVLPG of one of the current space's mappings;</item>
/// <item>2 %: a flush of every PCID: FlushTlb or INVPCID type 2, half each.</item>
/// </list>
/// </summary>
public sealed class CachedRootWorkload
{
    public const int Spaces = 8;
    public const int Length = 4000;
    public const ulong Seed = 0x5EED_0005;

    /// <summary>Impl runs timed by <see cref="TimeImpl"/>, whole and op by op.</summary>
    const int TimedRuns = 21;

    CachedRootWorkload(CachedRootGuest guest, CachedRootOp[] ops) { Guest = guest; Ops = ops; }

    public CachedRootGuest Guest { get; }
    public CachedRootOp[] Ops { get; }

    public static CachedRootWorkload Generate()
    {
        var guest = CachedRootGuest.Workload();
        var rng = new SplitMix64(Seed);
        var all = guest.Spaces.SelectMany(s => s.Mappings).Distinct().ToArray();
        // Most recently used first; the populate leaves the last space current.
        var recent = Enumerable.Range(0, Spaces).Reverse().ToList();
        var ops = new CachedRootOp[Length];
        for (int i = 0; i < Length; i++)
        {
            var current = guest.Spaces[recent[0]];
            int roll = rng.Next(100);
            CachedRootOp op;
            if (roll < 15)
            {
                int target = rng.Next(4) < 3 ? recent[1 + rng.Next(3)] : rng.Next(Spaces);
                bool noFlush = rng.Next(100) < 85;
                op = CachedRootOp.MovCr3(guest.Spaces[target].Cr3 | (noFlush ? ShadowOp.GuestMovCr3.NoFlush : 0));
                recent.Remove(target);
                recent.Insert(0, target);
            }
            else if (roll < 56)
                op = CachedRootOp.Read(Pick(current.Mappings).Gva);
            else if (roll < 66)
                op = CachedRootOp.Write(Pick(current.Mappings).Gva);
            else if (roll < 79)
            {
                var m = rng.Next(100) < 70 ? Pick(current.Mappings) : Pick(all);
                int v = rng.Next(100);
                op = CachedRootOp.Store(m.LeafEntryGpa, v < 50 ? m.LeafValue : v < 85 ? m.AltLeafValue : 0);
            }
            else if (roll < 87)
            {
                int other = (recent[0] + 1 + rng.Next(Spaces - 1)) % Spaces;
                op = CachedRootOp.Invpcid(ShadowOp.Invpcid.SingleContext, guest.Spaces[other].Pcid, 0);
            }
            else if (roll < 90)
            {
                var space = guest.Spaces[rng.Next(Spaces)];
                op = CachedRootOp.Invpcid(ShadowOp.Invpcid.IndividualAddress, space.Pcid, Pick(space.Mappings).Gva);
            }
            else if (roll < 98)
                op = CachedRootOp.Invlpg(Pick(current.Mappings).Gva);
            else
                op = rng.Next(2) == 0 ? CachedRootOp.FlushTlb() : CachedRootOp.Invpcid(ShadowOp.Invpcid.AllContexts, 0, 0);
            ops[i] = op;
        }
        return new CachedRootWorkload(guest, ops);

        T Pick<T>(T[] items) => items[rng.Next(items.Length)];
    }

    /// <summary>What <see cref="RunChecked"/> found.</summary>
    public sealed record CheckedRun(
        ImplPolicy Policy, ShadowRootStats Stats, ShadowRootStats PopulateStats, ShadowOutcome[] ImplOutcomes, ShadowState SpecStart,
        List<string> Disagreements, int RootDisagreements, Dictionary<string, int> ResultKinds,
        long ShadowPages, long UnsyncPagesAtEnd);

    /// <summary>What <see cref="TimeImpl"/> measured: the median time of a whole run, and the mean time and count per run of each kind of operation.</summary>
    public sealed record ImplTiming(double MedianMilliseconds, Dictionary<string, (double MeanNs, double MedianNs, int Count)> NsPerKind);

    /// <summary>
    /// A fresh rig under <paramref name="policy"/> (spec and impl), the populate, then every operation on both
    /// sides: the results compared (<see cref="CachedRootOp.Describe(VmResult)"/>) and the cached roots after
    /// each. Stats are the impl's over the operations only.
    /// </summary>
    public static CheckedRun RunChecked(CachedRootWorkload workload, ImplPolicy policy, NativePagePool pool)
    {
        var disagreements = new List<string>();
        int rootDisagreements = 0;
        var kinds = new Dictionary<string, int>();
        var outcomes = new ShadowOutcome[workload.Ops.Length];
        ShadowState specStart;
        ShadowRootStats stats, populateStats;
        long pages, unsync = 0;
        using (var rig = new CachedRootRig(workload.Guest, policy, pool, withSpec: true))
        {
            rig.Populate();
            rig.CheckRootsAgree($"{policy}: after the populate");
            specStart = rig.Spec!;
            populateStats = rig.Vm.RootStats;
            var spec = specStart;
            for (int i = 0; i < workload.Ops.Length; i++)
            {
                var op = workload.Ops[i];
                var outcome = op.Apply(rig.Vm);
                outcomes[i] = outcome;
                var (after, result) = spec.Step(op.ToSpec());
                spec = after;
                string s = CachedRootOp.Describe(result), m = CachedRootOp.Describe(outcome);
                string kind = $"{op.Kind}: {KindOf(s)}";
                kinds[kind] = kinds.GetValueOrDefault(kind) + 1;
                if (s != m)
                    disagreements.Add($"op {i} ({op}): spec {s} / impl {m}");
                string specRoots = CachedRootRig.DescribeRoots(spec.Roots), implRoots = CachedRootRig.DescribeRoots(rig.Vm);
                if (specRoots != implRoots)
                {
                    if (rootDisagreements++ < 5)
                        disagreements.Add($"op {i} ({op}): cached roots: spec {specRoots} / impl {implRoots}");
                }
            }
            stats = CachedRootRig.Delta(rig.Vm.RootStats, populateStats);
            pages = rig.Vm.ShadowPages;
            rig.Vm.VisitPages((p, _) => unsync += p.Unsync ? 1 : 0);
            if (spec.Pages.Count != pages)
                disagreements.Add($"after the workload: {spec.Pages.Count} spec pages, {pages} impl pages");
        }

        return new CheckedRun(policy, stats, populateStats, outcomes, specStart, disagreements, rootDisagreements, kinds, pages, unsync);
    }

    /// <summary>
    /// The impl alone under <paramref name="policy"/>: <see cref="TimedRuns"/> runs of the workload, each on a fresh
    /// populated VM, timed whole (median); then as many again with each operation timed on its own, summed per kind
    /// of operation and result (<paramref name="expected"/>: the checked run's outcomes). Rough figures, single-shot
    /// timestamps: the BDN benchmark <see cref="CachedRootWorkloadBenchmarks"/> measures the whole run properly.
    /// </summary>
    public static ImplTiming TimeImpl(CachedRootWorkload workload, ImplPolicy policy, NativePagePool pool, ShadowOutcome[] expected)
    {
        var times = new double[TimedRuns];
        for (int run = 0; run < TimedRuns; run++)
        {
            using var rig = new CachedRootRig(workload.Guest, policy, pool, withSpec: false);
            rig.Populate();
            var vm = rig.Vm;
            long start = Stopwatch.GetTimestamp();
            foreach (var op in workload.Ops)
                op.Apply(vm);
            times[run] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        // Where the time goes: each operation timed on its own (a timestamp pair adds some tens of ns), over
        // TimedRuns more fresh VMs, summed per kind and result.
        var perKind = new Dictionary<string, List<long>>();
        for (int run = 0; run < TimedRuns; run++)
        {
            using var rig = new CachedRootRig(workload.Guest, policy, pool, withSpec: false);
            rig.Populate();
            var vm = rig.Vm;
            for (int i = 0; i < workload.Ops.Length; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                workload.Ops[i].Apply(vm);
                long ticks = Stopwatch.GetTimestamp() - t0;
                string kind = KindName(workload.Ops[i], expected[i]);
                if (!perKind.TryGetValue(kind, out var samples))
                    perKind.Add(kind, samples = []);
                samples.Add(ticks);
            }
        }
        Array.Sort(times);
        double implMs = times[TimedRuns / 2];
        double ns = 1e9 / Stopwatch.Frequency;
        return new ImplTiming(implMs, perKind.ToDictionary(k => k.Key, k =>
        {
            k.Value.Sort();
            return (k.Value.Average() * ns, k.Value[k.Value.Count / 2] * ns, k.Value.Count / TimedRuns);
        }));
    }

    static double TimestampPairNs()
    {
        var ns = new double[10_000];
        for (int i = 0; i < ns.Length; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            ns[i] = (Stopwatch.GetTimestamp() - t0) * 1e9 / Stopwatch.Frequency;
        }
        Array.Sort(ns);
        return ns[ns.Length / 2];
    }

    /// <summary>The operation's kind, refined by what it did: a MOV CR3's NOFLUSH, a read or write's hit, fault or #PF, INVPCID's type.</summary>
    static string KindName(CachedRootOp op, ShadowOutcome outcome) => op.Kind switch
    {
        CachedRootOpKind.MovCr3 => (op.A & ShadowOp.GuestMovCr3.NoFlush) != 0 ? "MovCr3 NOFLUSH" : "MovCr3 flush",
        CachedRootOpKind.Read or CachedRootOpKind.Write => $"{op.Kind} {KindOf(CachedRootOp.Describe(outcome))}",
        CachedRootOpKind.Invpcid => $"Invpcid type {op.A}",
        _ => op.Kind.ToString(),
    };

    static string KindOf(string described) => described.StartsWith("translated", StringComparison.Ordinal)
        ? described.EndsWith("faulted", StringComparison.Ordinal) ? "faulted" : "hit"
        : described.StartsWith("#PF", StringComparison.Ordinal) ? "#PF" : described;

    /// <summary>
    /// <c>--roots-workload</c>: the workload under both policies, checked against the spec, with the impl's root
    /// statistics per policy and the rebuilds keep-and-resync saves. Returns 0, or 1 if spec and impl disagreed.
    /// </summary>
    public static int RunReport(TextWriter output)
    {
        var workload = Generate();
        var pool = new NativePagePool();
        var runs = new List<CheckedRun>();
        foreach (var policy in new[] { ImplPolicy.Upstream, ImplPolicy.KeepAndResync })
            runs.Add(RunChecked(workload, policy, pool));
        // Timing, with warm (tier-1) code: the impl's workload path takes about a second of runs to get there
        // (docs/performance.md), so each policy first runs on fresh VMs for CachedRootWarmUp's time.
        foreach (var r in runs)
        {
            CachedRootRig? rig = null;
            CachedRootWarmUp.Run($"the impl's workload ({r.Policy})", () => { rig?.Dispose(); rig = new CachedRootRig(workload.Guest, r.Policy, pool, withSpec: false); rig.Populate(); },
                () => { foreach (var op in workload.Ops) op.Apply(rig!.Vm); return rig!; }, output, minRuns: 300);
            rig?.Dispose();
        }
        var timings = runs.Select(r => TimeImpl(workload, r.Policy, pool, r.ImplOutcomes)).ToArray();
        NativePageLeaks.DisposePool(pool);

        var ops = workload.Ops;
        int movCr3 = ops.Count(o => o.Kind == CachedRootOpKind.MovCr3);
        int noFlush = ops.Count(o => o.Kind == CachedRootOpKind.MovCr3 && (o.A & ShadowOp.GuestMovCr3.NoFlush) != 0);
        int Count(CachedRootOpKind k) => ops.Count(o => o.Kind == k);
        int Invpcid(ulong type) => ops.Count(o => o.Kind == CachedRootOpKind.Invpcid && o.A == type);
        var guest = workload.Guest;
        output.WriteLine($"Cached-root workload: {Spaces} address spaces (PCIDs 1..{Spaces}), 4-level, MAXPHYADDR {CachedRootRig.MaxPhyAddr}, allowUnsync; " +
            $"{guest.TablePages} guest tables, {guest.LeafTableGfns.Count} of them leaf tables, {guest.Spaces[0].Mappings.Length} mappings per space");
        output.WriteLine($"Populate (not counted): per space a NOFLUSH MOV CR3 and a read of each mapping ({guest.Spaces.Sum(s => s.Mappings.Length + 1)} ops).");
        output.WriteLine($"Operations (seed 0x{Seed:X}): {ops.Length}: MOV CR3 {movCr3} ({noFlush} NOFLUSH), reads {Count(CachedRootOpKind.Read)}, " +
            $"writes {Count(CachedRootOpKind.Write)}, PTE stores {Count(CachedRootOpKind.Store)}, INVPCID single {Invpcid(ShadowOp.Invpcid.SingleContext)}, " +
            $"INVPCID address {Invpcid(ShadowOp.Invpcid.IndividualAddress)}, INVLPG {Count(CachedRootOpKind.Invlpg)}, " +
            $"full flushes {Count(CachedRootOpKind.FlushTlb) + Invpcid(ShadowOp.Invpcid.AllContexts)} (FlushTlb {Count(CachedRootOpKind.FlushTlb)}, INVPCID all {Invpcid(ShadowOp.Invpcid.AllContexts)})");
        output.WriteLine();
        output.WriteLine("| Policy        | Builds | CachedSwitches | Resyncs | Freed | PagesCreated | Pages at end | Unsync at end | Spec = impl (results, roots) | Impl run (median of 21) |");
        output.WriteLine("|---------------|-------:|---------------:|--------:|------:|-------------:|-------------:|--------------:|------------------------------|------------------------:|");
        foreach (var (r, t) in runs.Zip(timings))
        {
            string agree = r.Disagreements.Count == 0 ? $"yes, all {ops.Length}" : $"NO: {r.Disagreements.Count - Math.Min(r.RootDisagreements, 5)} results, {r.RootDisagreements} roots";
            output.WriteLine($"| {r.Policy,-13} | {r.Stats.Builds,6} | {r.Stats.CachedSwitches,14} | {r.Stats.Resyncs,7} | {r.Stats.Freed,5} | {r.Stats.PagesCreated,12} | " +
                $"{r.ShadowPages,12} | {r.UnsyncPagesAtEnd,13} | {agree,-28} | {t.MedianMilliseconds,20:F3} ms |");
        }
        var up = runs[0].Stats;
        var keep = runs[1].Stats;
        output.WriteLine();
        output.WriteLine($"Root builds saved by KeepAndResync: {up.Builds} - {keep.Builds} = {up.Builds - keep.Builds} " +
            $"({(up.Builds == 0 ? 0 : 100.0 * (up.Builds - keep.Builds) / up.Builds):F1} % of Upstream's), for {keep.Resyncs} resyncs on reuse; " +
            $"roots freed {up.Freed} vs {keep.Freed}.");
        output.WriteLine($"Populate stats (both policies): {runs[0].PopulateStats}; ShadowVm.RootInfoBytes = {ShadowVm.RootInfoBytes}.");
        output.WriteLine("Results per operation kind (spec's, Upstream | KeepAndResync):");
        foreach (var kind in runs.SelectMany(r => r.ResultKinds.Keys).Distinct().Order(StringComparer.Ordinal))
            output.WriteLine($"  {kind}: {runs[0].ResultKinds.GetValueOrDefault(kind)} | {runs[1].ResultKinds.GetValueOrDefault(kind)}");
        output.WriteLine($"Impl time per operation kind (count per run, mean and median ns; each operation timed on its own over {TimedRuns} fresh VMs), Upstream | KeepAndResync;");
        output.WriteLine($"each figure includes a timestamp pair, {TimestampPairNs():F0} ns here (median of 10,000 empty pairs):");
        foreach (var kind in timings.SelectMany(t => t.NsPerKind.Keys).Distinct().Order(StringComparer.Ordinal))
        {
            var (upNs, upMedian, upCount) = timings[0].NsPerKind.GetValueOrDefault(kind);
            var (keepNs, keepMedian, keepCount) = timings[1].NsPerKind.GetValueOrDefault(kind);
            output.WriteLine($"  {kind,-16}: {upCount,4} x mean {upNs,6:F0} ns (median {upMedian,5:F0}) = {upNs * upCount / 1000,6:F1} us | " +
                $"{keepCount,4} x mean {keepNs,6:F0} ns (median {keepMedian,5:F0}) = {keepNs * keepCount / 1000,6:F1} us");
        }
        bool ok = true;
        foreach (var r in runs.Where(r => r.Disagreements.Count != 0))
        {
            ok = false;
            output.WriteLine();
            output.WriteLine($"{r.Policy}: spec and impl DISAGREE ({r.Disagreements.Count} lines; first 20):");
            foreach (var line in r.Disagreements.Take(20))
                output.WriteLine($"  {line}");
        }
        return ok ? 0 : 1;
    }

    /// <summary>SplitMix64: a small deterministic generator, independent of the runtime's Random.</summary>
    sealed class SplitMix64(ulong seed)
    {
        ulong _state = seed;

        public ulong NextULong()
        {
            ulong z = _state += 0x9E3779B97F4A7C15;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            return z ^ (z >> 31);
        }

        public int Next(int bound) => (int)(NextULong() % (ulong)bound);
    }
}

/// <summary>
/// JIT warm-up for the workload (one invocation per iteration under BDN, and single runs in <c>--roots-workload</c>):
/// runs <c>reset</c> then <c>body</c> for at least <see cref="MinTime"/> and <c>minRuns</c> runs (at most
/// <see cref="MaxTime"/>, at least 3 runs), and prints the first run and the median of the last ten. The impl's
/// workload takes about a second, some 50-75 runs on fresh VMs, to reach tier-1 code (a probe: runs of 4-18 ms,
/// then 0.5-0.7 ms), longer than <see cref="ShadowWarmUp"/>'s minimum, with which BDN measured tier-0 code; the
/// impl gets 300 runs.
/// </summary>
internal static class CachedRootWarmUp
{
    static readonly TimeSpan MinTime = TimeSpan.FromSeconds(3), MaxTime = TimeSpan.FromSeconds(15);

    public static void Run(string name, Action reset, Func<object> body, TextWriter log, int minRuns)
    {
        var total = Stopwatch.StartNew();
        var times = new List<double>();
        while ((times.Count < minRuns || total.Elapsed < MinTime) && !(times.Count >= 3 && total.Elapsed >= MaxTime))
        {
            reset();
            long start = Stopwatch.GetTimestamp();
            GC.KeepAlive(body());
            times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        var last = times.TakeLast(10).Order().ToArray();
        log.WriteLine($"// CachedRoot warm-up of {name}: {times.Count} runs in {total.Elapsed.TotalSeconds:F1} s; first run {times[0]:F3} ms, " +
            $"median of the last {last.Length} {last[last.Length / 2]:F3} ms");
    }
}
