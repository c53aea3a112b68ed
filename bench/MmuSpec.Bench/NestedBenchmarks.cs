using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using I = MmuSpec.Impl.Paging;
using S = MmuSpec.Spec.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// The MMU for an L2 on L1's EPT (docs/nested-ept.md; impl <see cref="INestedEptVm"/>, spec <see cref="NestedEptState"/>)
/// on <see cref="NestedRig"/>'s L1: a 4-level EPT mapping <see cref="NestedRig.Mappings"/> 4 KiB L2 pages through two
/// page tables, EPT A/D off (so no walk writes L1's memory), and <see cref="NestedRig.Roots"/> EPTPs whose root tables
/// share everything below them. Setup enters L2 with root 1 and reads every page, so every shadow page exists. All
/// accesses are reads.
/// <list type="bullet">
/// <item><b>Fault</b>: an L2 read whose shadow leaf is missing: the shadow walk stops at the leaf, L1's EPT is walked
/// (four entries read in L1's memory) and the leaf is installed below the shadow pages, which all exist (KVM's
/// FNAME(page_fault) with every level linked). The leaves go before each invocation, outside the timing: an
/// [IterationSetup] has L1 rewrite every PTE with its own value, and write tracking drops the shadow leaf built from
/// it (the pages stay).</item>
/// <item><b>Hit</b>: the same reads on the populated MMU: the shadow walk (the hardware's) ends in a present leaf.</item>
/// </list>
/// The spec keeps nothing cached: its read is an EPT walk over L1's memory either way, so it is the baseline of both.
/// Times are per read (OperationsPerInvoke). Setup checks every read's L1 gpa and hpa on both sides and the faulted
/// flag of each, that a fault creates no shadow page, and that a warm invocation of each impl benchmark allocates
/// nothing (<see cref="GC.GetAllocatedBytesForCurrentThread"/>). Cleanup throws if a native page is left.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class NestedBenchmarks : ImplVsSpecBenchmark
{
    NestedRig _rig = null!;

    [GlobalSetup(Target = nameof(ImplFault))]
    public void SetupImplFault()
    {
        Setup();
        ShadowWarmUp.Run(nameof(ImplFault), DropLeaves, () => ImplFault());
    }

    [GlobalSetup(Targets = [nameof(SpecFault), nameof(SpecHit), nameof(ImplHit)])]
    public void Setup()
    {
        _rig = new NestedRig(NestedRootPolicy.KeepAndResync);
        long pages = _rig.Vm.Counters.ShadowPagesCreated;
        for (int round = 0; round < 3; round++)
        {
            DropLeaves();
            _rig.CheckReads(faulted: true, $"fault round {round}");
            _rig.CheckReads(faulted: false, $"hit round {round}");
        }
        if (_rig.Vm.Counters.ShadowPagesCreated != pages)
            throw new InvalidOperationException($"impl: the faults created {_rig.Vm.Counters.ShadowPagesCreated - pages} shadow pages");
        NestedRig.CheckNoAllocation(nameof(ImplHit), ImplHit);
        NestedRig.CheckNoAllocation(nameof(ImplFault), DropLeaves, () => ImplFault());
        Console.WriteLine($"// Nested: {NestedRig.Mappings} mappings, {_rig.Vm.ShadowPages().Count} shadow pages; {_rig.Layout}");
    }

    [GlobalCleanup]
    public void Cleanup() => _rig.Dispose();

    /// <summary>Every impl fault invocation starts with the shadow leaves gone and every shadow page present.</summary>
    [IterationSetup(Target = nameof(ImplFault))]
    public void DropLeaves() => _rig.DropLeaves();

    /// <summary>Nothing to do (the spec is immutable); declared so the spec's faults run like the impl's and share its job group.</summary>
    [IterationSetup(Target = nameof(SpecFault))]
    public void EmptySpec() { }

    [Benchmark(Baseline = true, OperationsPerInvoke = NestedRig.Mappings), BenchmarkCategory("Fault")]
    public ulong SpecFault() => _rig.SpecReads();

    [Benchmark(OperationsPerInvoke = NestedRig.Mappings), BenchmarkCategory("Fault")]
    public ulong ImplFault() => _rig.ImplReads();

    [Benchmark(Baseline = true, OperationsPerInvoke = NestedRig.Mappings), BenchmarkCategory("Hit")]
    public ulong SpecHit() => _rig.SpecReads();

    [Benchmark(OperationsPerInvoke = NestedRig.Mappings), BenchmarkCategory("Hit")]
    public ulong ImplHit() => _rig.ImplReads();
}

/// <summary>
/// EPTP switches (<c>LoadEptp</c>, nested_ept_new_eptp then kvm_mmu_new_pgd) between <see cref="NestedRig"/>'s roots, each
/// followed by one L2 read of the first mapping. Setup enters L2 with root 1 and then, in each root of 1..5 in turn, reads
/// every page, so the cached roots are 5 (current), 4, 3 and 2, most recent first; every sequence ends where it started.
/// <list type="bullet">
/// <item><b>CachedSwitch</b>: EPTPs 4 and 5 alternately, <see cref="Switches"/> per invocation: each load finds the root in
/// previous root 0 (the two trade places) and the read is a shadow hit.</item>
/// <item><b>Rebuild</b>: EPTPs 1, 2, 3, 4, 5 in turn, <see cref="MissCycles"/> rounds: each target was evicted four loads
/// earlier, so each load misses and frees the least recent root, and the read finds no root: it walks L1's EPT, reloads
/// the root (its page is still hashed, with every link below it: mmu_alloc_shadow_roots finding the page) and finds the
/// leaf present.</item>
/// </list>
/// Times are per switch and read (OperationsPerInvoke). The spec runs the same loads and reads from the same state
/// (immutable). Setup runs each sequence three times on both sides and checks every step: the load is Ok, the cached
/// roots are the expected LRU order, the counters moved by one cached-root hit (CachedSwitch) or one root built
/// (Rebuild) and no page, every read gives the expected hpa on both sides; then that a warm invocation allocates
/// nothing.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class NestedEptpSwitchBenchmarks : ImplVsSpecBenchmark
{
    public const int Switches = 64, MissCycles = 8, Misses = MissCycles * NestedRig.Roots;

    NestedRig _rig = null!;
    ulong[] _cached = null!, _miss = null!;
    NestedEptOp[] _specCached = null!, _specMiss = null!;
    NestedEptState _specStart = null!;

    [GlobalSetup]
    public void Setup()
    {
        _rig = new NestedRig(NestedRootPolicy.KeepAndResync);
        for (int root = 2; root <= NestedRig.Roots; root++)
        {
            _rig.Load(NestedRig.Eptp(root));
            _rig.CheckFirstRead(faulted: true, $"populate root {root}"); // every table below the root is shared: one fault links it
            _rig.CheckReads(faulted: false, $"populated root {root}");
        }
        _specStart = _rig.Spec;
        _rig.CheckRoots([5, 4, 3, 2], "after the populate");
        _cached = Enumerable.Range(0, Switches).Select(i => NestedRig.Eptp(i % 2 == 0 ? 4 : 5)).ToArray();
        _miss = Enumerable.Range(0, Misses).Select(i => NestedRig.Eptp(i % NestedRig.Roots + 1)).ToArray();
        _specCached = NestedRig.SpecSwitchOps(_cached);
        _specMiss = NestedRig.SpecSwitchOps(_miss);
        for (int round = 0; round < 3; round++)
        {
            _rig.CheckSwitches(_cached, hit: true, $"CachedSwitch round {round}");
            _rig.CheckSwitches(_miss, hit: false, $"Rebuild round {round}");
        }
        _rig.CheckRoots([5, 4, 3, 2], "after the checked sequences");
        NestedRig.CheckNoAllocation(nameof(ImplCachedSwitch), ImplCachedSwitch);
        NestedRig.CheckNoAllocation(nameof(ImplRebuild), ImplRebuild);
        Console.WriteLine($"// Nested EPTP switch: {NestedRig.Roots} roots, {_rig.Vm.ShadowPages().Count} shadow pages; counters {_rig.Vm.Counters}; {_rig.Layout}");
    }

    [GlobalCleanup]
    public void Cleanup() => _rig.Dispose();

    [Benchmark(Baseline = true, OperationsPerInvoke = Switches), BenchmarkCategory("CachedSwitch")]
    public NestedEptState SpecCachedSwitch() => NestedRig.RunSpec(_specStart, _specCached);

    [Benchmark(OperationsPerInvoke = Switches), BenchmarkCategory("CachedSwitch")]
    public ulong ImplCachedSwitch() => _rig.RunSwitches(_cached);

    [Benchmark(Baseline = true, OperationsPerInvoke = Misses), BenchmarkCategory("Rebuild")]
    public NestedEptState SpecRebuild() => NestedRig.RunSpec(_specStart, _specMiss);

    [Benchmark(OperationsPerInvoke = Misses), BenchmarkCategory("Rebuild")]
    public ulong ImplRebuild() => _rig.RunSwitches(_miss);
}

/// <summary>
/// INVEPT single-context naming the current EPTP, then one L2 read of the first mapping, <see cref="Invepts"/> times per
/// invocation, under each root policy ([Params]): under KVM's (<see cref="NestedRootPolicy.Upstream"/>, handle_invept)
/// the current root is freed and the read walks L1's EPT and reloads it (its page still hashed); under keep-and-resync
/// the root stays and the read is a shadow hit. Setup is <see cref="NestedRig"/>'s (L2 entered with root 1, every page
/// read). Per INVEPT and read. Setup checks every step three times (INVEPT Ok, the read's hpa, one root freed and one
/// built under Upstream, one kept and none built under keep-and-resync, no page created) and that a warm invocation
/// allocates nothing. The spec (INVEPT changes no state there; the read walks) is the baseline.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByParams)]
public class NestedInveptBenchmarks : ImplVsSpecBenchmark
{
    public const int Invepts = 64;

    [Params(NestedRootPolicy.Upstream, NestedRootPolicy.KeepAndResync)]
    public NestedRootPolicy Policy { get; set; }

    NestedRig _rig = null!;
    NestedEptOp[] _specOps = null!;
    NestedEptState _specStart = null!;

    [GlobalSetup]
    public void Setup()
    {
        _rig = new NestedRig(Policy);
        _specStart = _rig.Spec;
        _specOps = Enumerable.Range(0, Invepts).SelectMany(_ => new NestedEptOp[]
        {
            new NestedEptOp.Invept(InveptType.SingleContext, new EptPointer(NestedRig.Eptp(1))),
            new NestedEptOp.L2Access(0, S.AccessType.Read),
        }).ToArray();
        for (int round = 0; round < 3; round++)
            _rig.CheckInvepts(Invepts, $"INVEPT round {round}");
        NestedRig.CheckNoAllocation(nameof(ImplInvept), ImplInvept);
        Console.WriteLine($"// Nested INVEPT ({Policy}): counters {_rig.Vm.Counters}");
    }

    [GlobalCleanup]
    public void Cleanup() => _rig.Dispose();

    [Benchmark(Baseline = true, OperationsPerInvoke = Invepts)]
    public NestedEptState SpecInvept() => NestedRig.RunSpec(_specStart, _specOps);

    [Benchmark(OperationsPerInvoke = Invepts)]
    public ulong ImplInvept()
    {
        INestedEptVm vm = _rig.Vm;
        ulong eptp = NestedRig.Eptp(1), sum = 0;
        for (int i = 0; i < Invepts; i++)
        {
            vm.Invept(InveptKind.SingleContext, eptp);
            sum += vm.L2Access(0, I.AccessType.Read).Hpa;
        }
        return sum;
    }
}

/// <summary>
/// One nested VM on both sides, built by the same operations: L1's RAM in one slot (gfns 0..<see cref="SlotPages"/>, host
/// frames from <see cref="HostPfn"/>), <see cref="Roots"/> EPT root tables (gfns 1..5) whose PML4E 0 links one PDPT
/// (gfn 6), a PD (gfn 7) and two PTs (gfns 8, 9) mapping L2 gpas 0..4 MiB to L1 data frames from gfn 0x100 with RWX and
/// write-back; EPTPs 4-level, write-back, EPT A/D off; L2 entered with root 1 and every page read (a fault each).
/// </summary>
internal sealed class NestedRig : IDisposable
{
    public const int Roots = 5, LeafTables = 2, Mappings = LeafTables * 512;
    public const ulong HostPfn = 0x1000, DataGfn = 0x100, SlotPages = DataGfn + Mappings;
    const ulong Pdpt = 6, Pd = 7, FirstPt = 8, Rwx = 7, WriteBack = 6 << 3;
    static readonly EptCapabilities Caps = EptCapabilities.Default.WithExecuteOnly(true).WithMaxPhyAddr(46);

    readonly NativePagePool _pool = new();
    readonly NestedEptOp.L2Access[] _specReads;

    public NestedRig(NestedRootPolicy policy)
    {
        Vm = NestedEptVm.Create(46, executeOnly: true, _pool, policy);
        Spec = NestedEptState.Create(Caps);
        Step(new NestedEptOp.CreateSlot(0, 0, SlotPages, HostPfn));
        for (int root = 1; root <= Roots; root++)
            Store((ulong)root << 12, (Pdpt << 12) | Rwx);
        Store(Pdpt << 12, (Pd << 12) | Rwx);
        for (int t = 0; t < LeafTables; t++)
            Store((Pd << 12) + (ulong)t * 8, ((FirstPt + (ulong)t) << 12) | Rwx);
        for (int i = 0; i < Mappings; i++)
            Store(PteGpa(i), Pte(i));
        Load(Eptp(1));
        _specReads = Enumerable.Range(0, Mappings).Select(i => new NestedEptOp.L2Access(Gpa(i), S.AccessType.Read)).ToArray();
        // The populate, impl alone: every read a fault, and the managed bytes its shadow pages cost (all their bookkeeping).
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < Mappings; i++)
        {
            if (Vm.L2Access(Gpa(i), I.AccessType.Read) is not { Kind: NestedOutcomeKind.Translated, Faulted: true })
                throw new InvalidOperationException($"impl: the populate's read {i} was not a fault");
        }
        long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        PagesBuilt = Vm.Counters.ShadowPagesCreated;
        ManagedBytesPerPage = bytes / PagesBuilt;
        CheckReads(faulted: false, "populated");
    }

    /// <summary>Shadow pages the populate built, and the managed bytes it allocated per page (page object, child array, parent and tracking lists, hash entries).</summary>
    public long PagesBuilt { get; }
    public long ManagedBytesPerPage { get; }

    public INestedEptVm Vm { get; }
    public NestedEptState Spec { get; private set; }

    /// <summary>EPTP of root table <paramref name="root"/> (gfn 1..5): 4-level, write-back, EPT A/D off.</summary>
    public static ulong Eptp(int root) => EptPointer.Create((ulong)root << 12, 4, accessedDirty: false).Raw;

    public static ulong Gpa(int i) => (ulong)i << 12;

    static ulong PteGpa(int i) => ((FirstPt + (ulong)(i / 512)) << 12) + (ulong)(i % 512) * 8;

    static ulong Pte(int i) => ((DataGfn + (ulong)i) << 12) | WriteBack | Rwx;

    static ulong Hpa(int i) => (HostPfn + DataGfn + (ulong)i) << 12;

    /// <summary>The layout beside KVM's (docs/performance.md, "Nested EPT MMU"): a cached root's (EPTP, root) pair and what a page cost.</summary>
    public string Layout =>
        $"root info (EPTP, root) {Unsafe.SizeOf<(ulong, object)>()} B; populate: {PagesBuilt} shadow pages, {ManagedBytesPerPage} managed B per page besides its 4 KiB table";

    void Step(NestedEptOp op)
    {
        var (state, result) = Spec.Step(op);
        Spec = state;
        var impl = op switch
        {
            NestedEptOp.CreateSlot c => Vm.CreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase) == SlotStatus.Ok ? NestedOutcomeKind.Ok : NestedOutcomeKind.Rejected,
            NestedEptOp.L1Store s => Vm.L1Store(s.Gpa, s.Value, s.Size).Kind,
            NestedEptOp.LoadEptp l => Vm.LoadEptp(l.Eptp.Raw).Kind,
            _ => throw new ArgumentOutOfRangeException(nameof(op)),
        };
        if (result is not VmResult.Ok || impl != NestedOutcomeKind.Ok)
            throw new InvalidOperationException($"{op}: spec {result}, impl {impl} ({Vm.LastRejection})");
    }

    void Store(ulong gpa, ulong value) => Step(new NestedEptOp.L1Store(gpa, value, 8));

    public void Load(ulong eptp) => Step(new NestedEptOp.LoadEptp(new EptPointer(eptp)));

    /// <summary>L1 rewrites every PTE with its own value: write tracking drops each shadow leaf (KVM's kvm_mmu_track_write).</summary>
    public void DropLeaves()
    {
        for (int i = 0; i < Mappings; i++)
        {
            if (Vm.L1Store(PteGpa(i), Pte(i), 8).Kind != NestedOutcomeKind.Ok)
                throw new InvalidOperationException($"impl: the store into PTE {i} failed: {Vm.LastRejection}");
        }
    }

    public ulong ImplReads()
    {
        INestedEptVm vm = Vm;
        ulong sum = 0;
        for (int i = 0; i < Mappings; i++)
            sum += vm.L2Access(Gpa(i), I.AccessType.Read).Hpa;
        return sum;
    }

    public ulong SpecReads()
    {
        NestedEptState state = Spec;
        ulong sum = 0;
        foreach (var op in _specReads)
            sum += ((NestedEptResult.Translated)state.Step(op).Result).Hpa;
        return sum;
    }

    /// <summary>Every mapping read on both sides: the expected L1 gpa and hpa, the impl faulted (or hit) as asked, the spec unchanged.</summary>
    public void CheckReads(bool faulted, string what)
    {
        for (int i = 0; i < Mappings; i++)
        {
            var (state, result) = Spec.Step(_specReads[i]);
            var expected = new NestedEptResult.Translated(Gpa(i), (DataGfn + (ulong)i) << 12, Hpa(i));
            if (!Equals(result, expected) || !ReferenceEquals(state.Host, Spec.Host))
                throw new InvalidOperationException($"spec ({what}, read {i}): {result}, expected {expected} and no memory written");
            var o = Vm.L2Access(Gpa(i), I.AccessType.Read);
            if (o != new NestedOutcome(NestedOutcomeKind.Translated, expected.L2Gpa, expected.L1Gpa, expected.Hpa, Faulted: faulted))
                throw new InvalidOperationException($"impl ({what}, read {i}): {o}, expected {expected} {(faulted ? "by a fault" : "by a hit")}");
        }
    }

    /// <summary>The first mapping read on both sides: its L1 gpa and hpa, by a fault or a hit as asked.</summary>
    public void CheckFirstRead(bool faulted, string what)
    {
        var (_, result) = Spec.Step(_specReads[0]);
        var o = Vm.L2Access(0, I.AccessType.Read);
        if (result is not NestedEptResult.Translated { Hpa: var specHpa } || specHpa != Hpa(0) || o.Hpa != Hpa(0) || o.Faulted != faulted)
            throw new InvalidOperationException($"{what}: spec {result}, impl {o}, expected hpa {Hpa(0):X} {(faulted ? "by a fault" : "by a hit")}");
    }

    /// <summary>The cached roots, current first, are these roots (by index).</summary>
    public void CheckRoots(int[] roots, string what)
    {
        var actual = Vm.CachedRootEptps();
        if (!actual.SequenceEqual(roots.Select(Eptp)))
            throw new InvalidOperationException($"impl ({what}): cached roots {string.Join(", ", actual.Select(e => e.ToString("X")))}, expected roots {string.Join(", ", roots)}");
    }

    public static NestedEptOp[] SpecSwitchOps(ulong[] eptps) =>
        eptps.SelectMany(e => new NestedEptOp[] { new NestedEptOp.LoadEptp(new EptPointer(e)), new NestedEptOp.L2Access(0, S.AccessType.Read) }).ToArray();

    public static NestedEptState RunSpec(NestedEptState start, NestedEptOp[] ops)
    {
        NestedEptState state = start;
        foreach (var op in ops)
            state = state.Step(op).State;
        return state;
    }

    public ulong RunSwitches(ulong[] eptps)
    {
        INestedEptVm vm = Vm;
        ulong sum = 0;
        foreach (ulong eptp in eptps)
        {
            vm.LoadEptp(eptp);
            sum += vm.L2Access(0, I.AccessType.Read).Hpa;
        }
        return sum;
    }

    /// <summary>
    /// Each load and read on both sides: Ok, the read's hpa, the cached roots in LRU order (a hit: [target, old current,
    /// the other previous ones]; a miss: [target, old current, old previous 0, old previous 1]), and the counters moved by
    /// one cached-root hit and nothing else (hit) or one root built and nothing else (miss).
    /// </summary>
    public void CheckSwitches(ulong[] eptps, bool hit, string what)
    {
        foreach (ulong eptp in eptps)
        {
            var before = Vm.CachedRootEptps().ToList();
            var counters = Vm.Counters;
            if (hit != before.Skip(1).Contains(eptp) || before.Contains(0UL))
                throw new InvalidOperationException($"{what}: the sequence does not do what it claims (roots {string.Join(", ", before.Select(e => e.ToString("X")))}, target {eptp:X})");
            Load(eptp);
            CheckFirstRead(faulted: !hit, $"{what}, EPTP {eptp:X}");
            List<ulong> expected = [eptp, before[0], .. before.Skip(1).Where(e => e != eptp)];
            if (expected.Count > 4)
                expected.RemoveAt(4);
            if (!Vm.CachedRootEptps().SequenceEqual(expected))
                throw new InvalidOperationException($"{what}, EPTP {eptp:X}: cached roots {string.Join(", ", Vm.CachedRootEptps().Select(e => e.ToString("X")))}");
            var moved = Delta(Vm.Counters, counters);
            var wanted = hit ? new NestedRootCounters(0, 1, 0, 0, 0) : new NestedRootCounters(1, 0, 0, 0, 0);
            if (moved != wanted)
                throw new InvalidOperationException($"{what}, EPTP {eptp:X}: counters moved by {moved}, expected {wanted}");
        }
    }

    /// <summary>INVEPT single-context of the current EPTP and a read, <paramref name="count"/> times: what each policy owes.</summary>
    public void CheckInvepts(int count, string what)
    {
        bool upstream = Vm.RootPolicy == NestedRootPolicy.Upstream;
        for (int i = 0; i < count; i++)
        {
            var counters = Vm.Counters;
            var invept = new NestedEptOp.Invept(InveptType.SingleContext, new EptPointer(Eptp(1)));
            if (Spec.Step(invept).Result is not VmResult.Ok || Vm.Invept(InveptKind.SingleContext, Eptp(1)).Kind != NestedOutcomeKind.Ok)
                throw new InvalidOperationException($"{what}, INVEPT {i}: not Ok ({Vm.LastRejection})");
            var o = Vm.L2Access(0, I.AccessType.Read);
            if (o.Hpa != Hpa(0) || o.Faulted != upstream)
                throw new InvalidOperationException($"{what}, read {i}: {o}");
            var moved = Delta(Vm.Counters, counters);
            var wanted = upstream ? new NestedRootCounters(1, 0, 1, 0, 0) : new NestedRootCounters(0, 0, 0, 1, 0);
            if (moved != wanted)
                throw new InvalidOperationException($"{what}, INVEPT {i}: counters moved by {moved}, expected {wanted}");
        }
    }

    static NestedRootCounters Delta(NestedRootCounters a, NestedRootCounters b) =>
        new(a.RootsBuilt - b.RootsBuilt, a.CachedRootHits - b.CachedRootHits, a.RootsFreedByInvept - b.RootsFreedByInvept,
            a.RootsKeptAtInvept - b.RootsKeptAtInvept, a.ShadowPagesCreated - b.ShadowPagesCreated);

    /// <summary>10 warm invocations of <paramref name="body"/> (each after <paramref name="reset"/>, not counted) allocate nothing.</summary>
    public static void CheckNoAllocation(string name, Func<ulong> body) => CheckNoAllocation(name, () => { }, body);

    public static void CheckNoAllocation(string name, Action reset, Func<ulong> body)
    {
        ulong sum = 0;
        for (int i = 0; i < 100; i++)
        {
            reset();
            sum += body();
        }
        long bytes = 0;
        for (int i = 0; i < 10; i++)
        {
            reset();
            long before = GC.GetAllocatedBytesForCurrentThread();
            sum += body(); // no boxing inside the measured span
            bytes += GC.GetAllocatedBytesForCurrentThread() - before;
        }
        GC.KeepAlive(sum);
        if (bytes != 0)
            throw new InvalidOperationException($"impl: {name} allocated {bytes} B in 10 warm invocations");
    }

    public void Dispose()
    {
        Vm.Dispose();
        NativePageLeaks.Check(_pool, "after the VM was disposed");
    }
}
