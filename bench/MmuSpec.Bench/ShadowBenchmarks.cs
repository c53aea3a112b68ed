using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Shadow;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Shadow;
using I = MmuSpec.Impl.Paging;
using S = MmuSpec.Spec.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// The shadow MMU (docs/shadow-model.md) in the spec (<see cref="ShadowState.Step"/>) and the impl
/// (<see cref="IShadowVm"/>), per guest paging mode, on a guest whose tables map <see cref="Mappings"/>
/// 4 KiB pages: entries 0..511 of each of <see cref="LeafTables"/> guest page tables under one page
/// directory, reached through one chain of tables above it (every entry already has A set and every leaf
/// D, so no guest walk writes anything back). Both sides get the same guest tables
/// (<see cref="ShadowGuestLayout"/>) by <c>GuestStore</c> before <c>GuestSetPaging</c>, then a read of
/// every page populates the shadow tables: one shadow page per guest table (the PAE PDPT is KVM's
/// pae_root, not a page; a 32-bit page directory has four, one per quadrant). All accesses are
/// user-mode reads.
/// <list type="bullet">
/// <item><b>Fault</b>: a shadow fault with every shadow page above the leaf present: the leaf entry is
/// missing, so the access misses, walks the guest's tables (no A/D write-back), finds every table entry
/// of the shadow path present, and installs the 4 KiB leaf (with its reverse-map entry). Per invocation,
/// on both sides, a read of each of the <see cref="Mappings"/> pages (<see cref="SpecFaultOps"/> is the
/// same count). The impl's leaves are removed before each invocation, outside the timing, by an
/// [IterationSetup] <c>ZapRange</c> of the data gfns (KVM's rmap zap: the shadow pages stay), so nothing
/// but the faults is measured. The spec is immutable: every invocation starts again from its zapped
/// state.</item>
/// <item><b>Hit</b>: reads of all <see cref="Mappings"/> pages (both sides) on the populated MMU: the
/// shadow path ends in a present leaf whose rights allow the read, so nothing changes (what the hardware's
/// walk of the shadow tables would do).</item>
/// </list>
/// Times are per fault or per hit (OperationsPerInvoke). As in <see cref="TdpBenchmarks"/>, [IterationSetup]
/// makes BDN run one invocation per iteration, so the spec's fault benchmark gets an empty
/// [IterationSetup] too (same job group, hence the Ratio column), and each fault benchmark's setup runs
/// the benchmark itself until its code is warm (<see cref="ShadowWarmUp"/>). Setup checks, before
/// measuring, that every benchmarked access gives the expected gpa, hpa and faulted flag on both sides,
/// that a hit leaves the spec's state the same instance, that a fault creates no shadow page, and that
/// neither side writes guest memory. The spec is the baseline of each category within each mode.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByParams, BenchmarkLogicalGroupRule.ByCategory)]
public class ShadowBenchmarks : ImplVsSpecBenchmark
{
    /// <summary>Guest page tables, 512 pages mapped by each.</summary>
    public const int LeafTables = 2;

    /// <summary>4 KiB pages mapped, faulted and hit per invocation.</summary>
    public const int Mappings = LeafTables * 512;

    /// <summary>
    /// Faults per spec invocation: all <see cref="Mappings"/>, the impl's sequence, from the same zapped state.
    /// The spec's guest walk reads guest memory through the memslots on demand (SlotMemory.View), so a spec
    /// fault costs microseconds and the whole sequence fits in an invocation.
    /// </summary>
    public const int SpecFaultOps = Mappings;

    [Params(Mode.Bits32, Mode.Pae, Mode.Long4, Mode.Long5)]
    public Mode Mode { get; set; }

    ShadowRig _rig = null!;
    IShadowVm _vm = null!;
    ulong[] _gvas = null!;
    ulong _dataStart, _dataEnd;
    long _pages;

    ShadowState _specPopulated = null!;
    ShadowState _specZapped = null!;
    ShadowOp[] _specReads = null!;
    ShadowOp[] _specFaultReads = null!;

    // ---- setup and cleanup ----

    [GlobalSetup(Target = nameof(SpecFault))]
    public void SetupSpecFault()
    {
        Setup();
        ShadowWarmUp.Run($"{nameof(SpecFault)} ({Mode})", () => { }, () => SpecFault());
    }

    [GlobalSetup(Target = nameof(ImplFault))]
    public void SetupImplFault()
    {
        Setup();
        ShadowWarmUp.Run($"{nameof(ImplFault)} ({Mode})", ZapImplLeaves, () => ImplFault());
    }

    [GlobalSetup(Targets = [nameof(SpecHit), nameof(ImplHit)])]
    public void SetupHits() => Setup();

    [GlobalCleanup]
    public void Cleanup() => _rig.Dispose();

    /// <summary>Every impl fault invocation starts with the leaves gone and every shadow page present.</summary>
    [IterationSetup(Target = nameof(ImplFault))]
    public void ZapImplLeaves()
    {
        if (_vm.ZapRange(_dataStart, _dataEnd).Status != ShadowStatus.Ok || _vm.ShadowPages != _pages)
            throw new InvalidOperationException($"impl: could not zap the leaves: {_vm.LastRejection}");
    }

    /// <summary>Nothing to do (the spec is immutable); declared so the spec's faults run like the impl's and share its job group.</summary>
    [IterationSetup(Target = nameof(SpecFault))]
    public void EmptySpec() { }

    // ---- benchmarks ----

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecFaultOps), BenchmarkCategory("Fault")]
    public ShadowState SpecFault()
    {
        ShadowState state = _specZapped;
        foreach (ShadowOp op in _specFaultReads)
            state = state.Step(op).State;
        return state;
    }

    [Benchmark(OperationsPerInvoke = Mappings), BenchmarkCategory("Fault")]
    public ulong ImplFault()
    {
        IShadowVm vm = _vm;
        ulong sum = 0;
        foreach (ulong gva in _gvas)
            sum += vm.GuestAccess(gva, I.AccessType.Read, I.Privilege.User).Hpa;
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Mappings), BenchmarkCategory("Hit")]
    public ulong SpecHit()
    {
        ShadowState state = _specPopulated;
        ulong sum = 0;
        foreach (ShadowOp op in _specReads)
            sum += ((ShadowResult.Translated)state.Step(op).Result).Hpa;
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Mappings), BenchmarkCategory("Hit")]
    public ulong ImplHit()
    {
        IShadowVm vm = _vm;
        ulong sum = 0;
        foreach (ulong gva in _gvas)
            sum += vm.GuestAccess(gva, I.AccessType.Read, I.Privilege.User).Hpa;
        return sum;
    }

    // ---- helpers ----

    /// <summary>
    /// Both sides populated (a read of every page, each a fault), then checked: every read of the populated
    /// MMU is a hit on both sides and leaves the spec's state the same instance; twice, a ZapRange of the data
    /// gfns removes every leaf and no page, and the reads then fault, creating no page, with the expected
    /// translations; neither side ever writes guest memory. Throws otherwise.
    /// </summary>
    void Setup()
    {
        _rig = new ShadowRig(ShadowGuestLayout.LeafTables(Mode, LeafTables), allowUnsync: true);
        var layout = _rig.Layout;
        _vm = _rig.Vm;
        _gvas = layout.Gvas;
        _specReads = _rig.SpecReads;
        _specFaultReads = _specReads[..SpecFaultOps];
        _dataStart = ShadowGuestLayout.DataBaseGfn;
        _dataEnd = ShadowGuestLayout.DataBaseGfn + Mappings;
        var specZap = new ShadowOp.ZapRange(_dataStart, _dataEnd);

        var specMemoryBefore = _rig.Spec.HostMemory;
        var implMemoryBefore = _rig.ImplHostMemory();

        _rig.ReadAll(faulted: true, "populate");
        _pages = _vm.ShadowPages;
        _rig.CheckCounts(_rig.Spec, "after the populate", pages: _pages, leaves: Mappings, unsync: 0);
        _specPopulated = _rig.Spec;

        // Hits: same translation, not faulted, the spec's state unchanged.
        for (int i = 0; i < Mappings; i++)
        {
            var (after, result) = _specPopulated.Step(_specReads[i]);
            _rig.CheckSpecTranslated(result, i, faulted: false, "hit");
            if (!ReferenceEquals(after, _specPopulated))
                throw new InvalidOperationException($"spec: read {i} changed the state; it is not a hit");
            _rig.CheckImplTranslated(_vm.GuestAccess(_gvas[i], I.AccessType.Read, I.Privilege.User), i, faulted: false, "hit");
        }

        // Faults, twice: zap the leaves, then every read refaults without creating a page.
        _specZapped = ShadowRig.ExpectOk(_specPopulated, specZap);
        for (int cycle = 0; cycle < 2; cycle++)
        {
            ZapImplLeaves();
            _rig.Spec = _specZapped;
            _rig.CheckCounts(_specZapped, "after the zap", pages: _pages, leaves: 0, unsync: 0);
            _rig.ReadAll(faulted: true, $"fault (cycle {cycle})");
            _rig.CheckCounts(_rig.Spec, "after the refault", pages: _pages, leaves: Mappings, unsync: 0);
        }

        if (!_rig.Spec.HostMemory.SequenceEqual(specMemoryBefore) || !_rig.ImplHostMemory().SequenceEqual(implMemoryBefore))
            throw new InvalidOperationException("a guest walk wrote guest memory; the walks are not warm");
        _rig.Print($"{Mode}, {LeafTables} leaf tables");
    }

}

/// <summary>
/// Impl only: the <see cref="ShadowBenchmarks"/> Fault (4-level guest, every shadow page above the leaf present,
/// the leaves removed before each invocation by an [IterationSetup] <c>ZapRange</c> of the data gfns) with
/// the guest's pages spread over 32, 128 or 512 page tables under one page directory, every entry of every
/// table mapped, so the working set (guest tables, shadow level-1 pages and their translations, rmap heads)
/// grows from 0.5 to 8 MiB and a fault's cost shows how many cache lines it touches. A read of every page per
/// invocation; times are per read. The spec is not run (it would need minutes to store 262,144 guest
/// entries); the fault path is the one the spec-checked Fault benchmark times.
/// <list type="bullet">
/// <item><see cref="Order"/>: <see cref="SpreadOrder.TableByTable"/> reads in gva order (a table's 512 pages,
/// then the next table's: consecutive faults share the guest table's and the shadow page's lines);
/// <see cref="SpreadOrder.AcrossTables"/> reads entry 0 of every table, then entry 1 of every table, and so
/// on, so consecutive faults never share a table and each touches the cold lines (and host pages) of
/// another guest table, shadow page, translations page and rmap: the spread-fault scenario of issue 19,
/// whose cost grows with the number of tables.</item>
/// <item><see cref="Prefetch"/>: the VM prefetches neighbours (KVM's pte_prefetch; docs/shadow-model.md,
/// "Prefetch"): the first read of each aligned group of 8 entries faults and maps the other 7, which then
/// hit, so 1 read in 8 faults in either order. Setup checks every translation and that count.</item>
/// </list>
/// </summary>
public class ShadowSpreadBenchmarks : ImplVsSpecBenchmark
{
    const int Pages32 = 32 * 512, Pages128 = 128 * 512, Pages512 = 512 * 512;

    public enum SpreadOrder
    {
        TableByTable,
        AcrossTables,
    }

    [Params(SpreadOrder.TableByTable, SpreadOrder.AcrossTables)]
    public SpreadOrder Order { get; set; }

    [Params(false, true)]
    public bool Prefetch { get; set; }

    ShadowRig _rig = null!;
    IShadowVm _vm = null!;
    ulong[] _gvas = null!;
    long _pages;

    [GlobalSetup(Target = nameof(Spread32))]
    public void Setup32() => Setup(32, () => Spread32());

    [GlobalSetup(Target = nameof(Spread128))]
    public void Setup128() => Setup(128, () => Spread128());

    [GlobalSetup(Target = nameof(Spread512))]
    public void Setup512() => Setup(512, () => Spread512());

    [GlobalCleanup]
    public void Cleanup() => _rig.Dispose();

    [IterationSetup]
    public void ZapLeaves()
    {
        ulong start = ShadowGuestLayout.DataBaseGfn;
        if (_vm.ZapRange(start, start + (ulong)_gvas.Length).Status != ShadowStatus.Ok || (_pages != 0 && _vm.ShadowPages != _pages))
            throw new InvalidOperationException($"impl: could not zap the leaves: {_vm.LastRejection}");
    }

    [Benchmark(OperationsPerInvoke = Pages32)]
    public ulong Spread32() => FaultAll();

    [Benchmark(OperationsPerInvoke = Pages128)]
    public ulong Spread128() => FaultAll();

    [Benchmark(OperationsPerInvoke = Pages512)]
    public ulong Spread512() => FaultAll();

    ulong FaultAll()
    {
        IShadowVm vm = _vm;
        ulong sum = 0;
        foreach (ulong gva in _gvas)
            sum += vm.GuestAccess(gva, I.AccessType.Read, I.Privilege.User).Hpa;
        return sum;
    }

    /// <summary>
    /// Every scenario in-process (setup and warm-up as the benchmark's), then 7 timed invocations each, each
    /// after a zap: the process CPU time per read (best and median of 7) and the faults per read. CPU time
    /// counts only this process's work, so it moves less with other load than BDN's wall clock, but shared
    /// caches still make it noisy: the report prints the load average.
    /// </summary>
    public static int RunWorkloadReport(TextWriter log)
    {
        log.WriteLine($"# ShadowSpreadBenchmarks as CPU time per read; load average {File.ReadAllText("/proc/loadavg").Trim()}");
        log.WriteLine("tables  order         prefetch  best ns  median ns  faults per read (checked by setup)");
        foreach (int tables in new[] { 32, 128, 512 })
            foreach (var order in new[] { SpreadOrder.TableByTable, SpreadOrder.AcrossTables })
                foreach (bool prefetch in new[] { false, true })
                {
                    var b = new ShadowSpreadBenchmarks { Order = order, Prefetch = prefetch };
                    Func<ulong> body = tables switch { 32 => b.Spread32, 128 => b.Spread128, _ => b.Spread512 };
                    b.Setup(tables, body);
                    var perRead = new List<double>();
                    long allocated = 0;
                    for (int run = 0; run < 7; run++)
                    {
                        b.ZapLeaves();
                        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                        long bytes = GC.GetAllocatedBytesForCurrentThread();
                        ulong sum = body();
                        allocated += GC.GetAllocatedBytesForCurrentThread() - bytes;
                        perRead.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalNanoseconds / b._gvas.Length);
                        GC.KeepAlive(sum);
                    }
                    perRead.Sort();
                    log.WriteLine($"{tables,6}  {order,-12}  {prefetch,-8}  {perRead[0],7:F1}  {perRead[3],9:F1}  {(prefetch ? 0.125 : 1.0),15:F3}  {allocated} B allocated in 7 runs");
                    b.Cleanup();
                }
        log.WriteLine($"# load average at the end {File.ReadAllText("/proc/loadavg").Trim()}");
        return 0;
    }

    /// <summary>
    /// The mappings in the order <see cref="Order"/> reads them: mapping t * 512 + e is entry e of table t.
    /// </summary>
    public static int[] ReadOrder(SpreadOrder order, int tables) => order == SpreadOrder.TableByTable
        ? Enumerable.Range(0, tables * 512).ToArray()
        : Enumerable.Range(0, tables * 512).Select(i => (i % tables) * 512 + i / tables).ToArray();

    /// <summary>Populates, then checks twice that a zap and a read of every page give the expected translations, fault as expected and create no page.</summary>
    void Setup(int tables, Func<ulong> body)
    {
        _rig = new ShadowRig(new ShadowGuestLayout(Mode.Long4, Enumerable.Range(0, tables * 512)
            .Select(i => new[] { 1, 2, i / 512, i % 512 }).ToList()), allowUnsync: true, withSpec: false, prefetch: Prefetch);
        _vm = _rig.Vm;
        int[] order = ReadOrder(Order, tables);
        _gvas = order.Select(i => _rig.Layout.Gvas[i]).ToArray();
        for (int cycle = 0; cycle < 3; cycle++)
        {
            if (cycle > 0)
                ZapLeaves();
            int faults = 0;
            foreach (int i in order)
            {
                // Without prefetch every read faults; with it, the first read of each group of 8 entries.
                var outcome = _vm.GuestAccess(_rig.Layout.Gvas[i], I.AccessType.Read, I.Privilege.User);
                _rig.CheckImplTranslated(outcome, i, outcome.Faulted, $"read (cycle {cycle})");
                faults += outcome.Faulted ? 1 : 0;
            }
            int expected = Prefetch ? order.Length / 8 : order.Length;
            if (faults != expected)
                throw new InvalidOperationException($"cycle {cycle}: {faults} faults, expected {expected}");
            if (cycle == 0)
                _pages = _vm.ShadowPages;
            else if (_vm.ShadowPages != _pages)
                throw new InvalidOperationException("a refault created a shadow page");
        }
        _rig.Print($"Long4 spread over {tables} page tables, {Order}{(Prefetch ? ", prefetch" : "")}");
        ShadowWarmUp.Run($"spread fault ({tables} tables, {Order}{(Prefetch ? ", prefetch" : "")})", ZapLeaves, () => body());
    }
}

/// <summary>
/// The shadow MMU's other paths, for a 4-level guest (CR0.WP, EFER.NXE, user-mode reads), spec against impl:
/// <list type="bullet">
/// <item><b>ColdFault</b>: a fault that creates every shadow page below the root. The guest maps
/// <see cref="ColdChains"/> pages, each through its own PDPT, page directory and page table (PML4 entries
/// 0..255). Before each invocation ([IterationSetup], outside the timing) <c>ZapAll</c> empties the MMU and
/// <c>FlushTlb</c> reloads the root, so only the level-4 root page exists; each measured read then misses,
/// walks the guest's tables, and creates, write-protects, hashes and links the level-3, level-2 and level-1
/// shadow pages before installing the leaf (three page creations per fault).</item>
/// <item><b>Zap</b>: <c>ZapRange(gfn, gfn + 1)</c> of one mapped data page (its rmap holds one leaf, which is
/// removed; the pages stay), for each of the <see cref="Mappings"/> pages of <see cref="ShadowBenchmarks"/>'
/// guest (2 page tables of 512 pages). [IterationSetup] refaults them all first.</item>
/// <item><b>ZapRefault</b>: the same zap followed by the read that refaults the page: no iteration setup
/// (the MMU is back where it started after every pair), so BDN's usual pilot and unrolling apply. Time per
/// pair; ZapRefault minus Zap is a second reading of <see cref="ShadowBenchmarks"/>' 4-level Fault.</item>
/// <item><b>UnsyncStore</b> (allowUnsync = true): a guest store of a page-table entry (8 bytes, the value it
/// already holds) into a level-1 guest table that is shadowed by a sync level-1 page and so write-protected:
/// the unsync succeeds (the page goes unsync and its ancestors' unsync-children bits are set), the value is
/// stored, nothing else. The guest has <see cref="StoreTables"/> page tables (512 per page directory), each
/// mapping one page, so each store of an invocation unsyncs a different page. [IterationSetup] re-arms them
/// with <c>FlushTlb</c> (every page synced and write-protected again), outside the timing.</item>
/// <item><b>EmulatedStore</b> (allowUnsync = false, same guest and stores): the unsync fails, so the store is
/// emulated: stored, then the tracked-write rule finds the gfn's one indirect page (a level-1 page) and
/// removes the written entry (a leaf: out of its rmap). [IterationSetup] re-arms by re-reading every page
/// (each refaults its leaf), outside the timing.</item>
/// <item><b>UpperStore</b> (allowUnsync = true, same guest): a store of a page-directory entry (the value it
/// already holds): the table is shadowed at level 2, so the unsync fails and the store is emulated; the
/// level-2 page's write-flooding count goes to 1 and the written entry (the link to that page table's
/// level-1 page) is removed. The re-arm is measured with it: the read of that page right after misses
/// (the link is gone), walks the guest, resets the flooding counts on the way down, finds the existing
/// level-1 page by hash and relinks it, and rewrites the leaf. Time per (store + refault) pair; no
/// iteration setup.</item>
/// </list>
/// Times are per operation (OperationsPerInvoke). Store and zap benchmarks with an [IterationSetup] run one
/// invocation per iteration, as the fault benchmarks do; their spec baselines get an empty one, and each gets
/// a JIT warm-up (<see cref="ShadowWarmUp"/>). Setup runs every measured sequence twice on both sides before
/// measuring, checking every result (Ok, or the expected translation and faulted flag) and the page, leaf and
/// unsync-page counts before and after. The spec runs the impl's whole sequence (the Spec*Ops counts equal
/// the impl's), from the same starting state, which it restarts from on every invocation (it is immutable).
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class ShadowLong4Benchmarks : ImplVsSpecBenchmark
{
    /// <summary>Pages mapped by the cold-fault guest, each through its own PDPT, page directory and page table.</summary>
    public const int ColdChains = 256;

    /// <summary>Pages zapped per invocation (2 page tables of 512).</summary>
    public const int Mappings = ShadowBenchmarks.Mappings;

    /// <summary>Page tables (each mapping one page) written per invocation of the store benchmarks.</summary>
    public const int StoreTables = 1024;

    /// <summary>
    /// Operations per spec invocation: the impl's whole sequence. A spec operation costs about 20-230 us here, so a
    /// spec invocation takes 20-100 ms.
    /// </summary>
    public const int SpecColdOps = ColdChains, SpecZapOps = Mappings, SpecStoreOps = StoreTables;

    ShadowRig _rig = null!;
    IShadowVm _vm = null!;
    ulong[] _gvas = null!;
    ulong[] _dataGfns = null!;
    ulong[] _entryGpas = null!;
    ulong[] _entryValues = null!;
    long _pages;

    ShadowState _specStart = null!;
    ShadowOp[] _specOps = null!;

    // ---- setup and cleanup ----

    [GlobalSetup(Target = nameof(SpecColdFault))]
    public void SetupSpecColdFault()
    {
        SetupCold();
        ShadowWarmUp.Run(nameof(SpecColdFault), () => { }, () => SpecColdFault());
    }

    [GlobalSetup(Target = nameof(ImplColdFault))]
    public void SetupImplColdFault()
    {
        SetupCold();
        ShadowWarmUp.Run(nameof(ImplColdFault), EmptyImpl, () => ImplColdFault());
    }

    [GlobalSetup(Target = nameof(SpecZap))]
    public void SetupSpecZap()
    {
        SetupZap(refault: false);
        ShadowWarmUp.Run(nameof(SpecZap), () => { }, () => SpecZap());
    }

    [GlobalSetup(Target = nameof(ImplZap))]
    public void SetupImplZap()
    {
        SetupZap(refault: false);
        ShadowWarmUp.Run(nameof(ImplZap), RefaultImpl, () => ImplZap());
    }

    [GlobalSetup(Targets = [nameof(SpecZapRefault), nameof(ImplZapRefault)])]
    public void SetupZapRefault() => SetupZap(refault: true);

    [GlobalSetup(Target = nameof(SpecUnsyncStore))]
    public void SetupSpecUnsyncStore()
    {
        SetupStores(StoreKind.Unsync);
        ShadowWarmUp.Run(nameof(SpecUnsyncStore), () => { }, () => SpecUnsyncStore());
    }

    [GlobalSetup(Target = nameof(ImplUnsyncStore))]
    public void SetupImplUnsyncStore()
    {
        SetupStores(StoreKind.Unsync);
        ShadowWarmUp.Run(nameof(ImplUnsyncStore), ResyncImpl, () => ImplUnsyncStore());
    }

    [GlobalSetup(Target = nameof(SpecEmulatedStore))]
    public void SetupSpecEmulatedStore()
    {
        SetupStores(StoreKind.Emulated);
        ShadowWarmUp.Run(nameof(SpecEmulatedStore), () => { }, () => SpecEmulatedStore());
    }

    [GlobalSetup(Target = nameof(ImplEmulatedStore))]
    public void SetupImplEmulatedStore()
    {
        SetupStores(StoreKind.Emulated);
        ShadowWarmUp.Run(nameof(ImplEmulatedStore), RefaultImpl, () => ImplEmulatedStore());
    }

    [GlobalSetup(Targets = [nameof(SpecUpperStore), nameof(ImplUpperStore)])]
    public void SetupUpperStore() => SetupStores(StoreKind.Upper);

    [GlobalCleanup]
    public void Cleanup() => _rig.Dispose();

    /// <summary>Cold faults: only the root page left (ZapAll, then FlushTlb reloads the root).</summary>
    [IterationSetup(Target = nameof(ImplColdFault))]
    public void EmptyImpl()
    {
        if (_vm.ZapAll().Status != ShadowStatus.Ok || _vm.FlushTlb().Status != ShadowStatus.Ok || _vm.ShadowPages != 1)
            throw new InvalidOperationException($"impl: could not empty the MMU: {_vm.LastRejection}");
    }

    /// <summary>Zap and emulated stores: every page read again, so every leaf is back (each read a fault).</summary>
    [IterationSetup(Targets = [nameof(ImplZap), nameof(ImplEmulatedStore)])]
    public void RefaultImpl()
    {
        foreach (ulong gva in _gvas)
        {
            if (_vm.GuestAccess(gva, I.AccessType.Read, I.Privilege.User).Status != ShadowStatus.Translated)
                throw new InvalidOperationException($"impl: re-read of gva {gva:X} failed");
        }
        if (_vm.ShadowPages != _pages)
            throw new InvalidOperationException($"impl: {_vm.ShadowPages} shadow pages after the re-arm, expected {_pages}");
    }

    /// <summary>Unsync stores: every page synced and its table write-protected again.</summary>
    [IterationSetup(Target = nameof(ImplUnsyncStore))]
    public void ResyncImpl()
    {
        if (_vm.FlushTlb().Status != ShadowStatus.Ok || _vm.ShadowPages != _pages)
            throw new InvalidOperationException($"impl: FlushTlb failed: {_vm.LastRejection}");
    }

    /// <summary>Nothing to do (the spec is immutable); declared so the spec runs like the impl and shares its job group.</summary>
    [IterationSetup(Targets = [nameof(SpecColdFault), nameof(SpecZap), nameof(SpecUnsyncStore), nameof(SpecEmulatedStore)])]
    public void EmptySpec() { }

    // ---- benchmarks ----

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecColdOps), BenchmarkCategory("ColdFault")]
    public ShadowState SpecColdFault() => RunSpec();

    [Benchmark(OperationsPerInvoke = ColdChains), BenchmarkCategory("ColdFault")]
    public ulong ImplColdFault()
    {
        IShadowVm vm = _vm;
        ulong sum = 0;
        foreach (ulong gva in _gvas)
            sum += vm.GuestAccess(gva, I.AccessType.Read, I.Privilege.User).Hpa;
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecZapOps), BenchmarkCategory("Zap")]
    public ShadowState SpecZap() => RunSpec();

    [Benchmark(OperationsPerInvoke = Mappings), BenchmarkCategory("Zap")]
    public int ImplZap()
    {
        IShadowVm vm = _vm;
        int ok = 0;
        foreach (ulong gfn in _dataGfns)
            ok += (int)vm.ZapRange(gfn, gfn + 1).Status;
        return ok;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecZapOps), BenchmarkCategory("ZapRefault")]
    public ShadowState SpecZapRefault() => RunSpec();

    [Benchmark(OperationsPerInvoke = Mappings), BenchmarkCategory("ZapRefault")]
    public ulong ImplZapRefault()
    {
        IShadowVm vm = _vm;
        ulong[] gvas = _gvas, gfns = _dataGfns;
        ulong sum = 0;
        for (int i = 0; i < gvas.Length; i++)
        {
            vm.ZapRange(gfns[i], gfns[i] + 1);
            sum += vm.GuestAccess(gvas[i], I.AccessType.Read, I.Privilege.User).Hpa;
        }
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecStoreOps), BenchmarkCategory("UnsyncStore")]
    public ShadowState SpecUnsyncStore() => RunSpec();

    [Benchmark(OperationsPerInvoke = StoreTables), BenchmarkCategory("UnsyncStore")]
    public int ImplUnsyncStore() => StoreAll();

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecStoreOps), BenchmarkCategory("EmulatedStore")]
    public ShadowState SpecEmulatedStore() => RunSpec();

    [Benchmark(OperationsPerInvoke = StoreTables), BenchmarkCategory("EmulatedStore")]
    public int ImplEmulatedStore() => StoreAll();

    [Benchmark(Baseline = true, OperationsPerInvoke = SpecStoreOps), BenchmarkCategory("UpperStore")]
    public ShadowState SpecUpperStore() => RunSpec();

    [Benchmark(OperationsPerInvoke = StoreTables), BenchmarkCategory("UpperStore")]
    public ulong ImplUpperStore()
    {
        IShadowVm vm = _vm;
        ulong[] gvas = _gvas, gpas = _entryGpas, values = _entryValues;
        ulong sum = 0;
        for (int i = 0; i < gvas.Length; i++)
        {
            vm.GuestStore(gpas[i], values[i], sizeof(ulong));
            sum += vm.GuestAccess(gvas[i], I.AccessType.Read, I.Privilege.User).Hpa;
        }
        return sum;
    }

    // ---- helpers ----

    ShadowState RunSpec()
    {
        ShadowState state = _specStart;
        foreach (ShadowOp op in _specOps)
            state = state.Step(op).State;
        return state;
    }

    int StoreAll()
    {
        IShadowVm vm = _vm;
        ulong[] gpas = _entryGpas, values = _entryValues;
        int ok = 0;
        for (int i = 0; i < gpas.Length; i++)
            ok += (int)vm.GuestStore(gpas[i], values[i], sizeof(ulong)).Status;
        return ok;
    }

    void Bind(ShadowRig rig)
    {
        _rig = rig;
        _vm = rig.Vm;
        _gvas = rig.Layout.Gvas;
        _dataGfns = Enumerable.Range(0, rig.Layout.Count).Select(i => ShadowGuestLayout.DataBaseGfn + (ulong)i).ToArray();
    }

    /// <summary>
    /// The cold-fault guest; twice: ZapAll and FlushTlb leave the root page only, then every read faults with
    /// the expected translation and creates three pages. The spec starts each invocation from that root-only state.
    /// </summary>
    void SetupCold()
    {
        Bind(new ShadowRig(ShadowGuestLayout.ChainPerMapping(ColdChains), allowUnsync: true));
        _pages = 1 + 3 * ColdChains;
        for (int cycle = 0; cycle < 2; cycle++)
        {
            EmptyImpl();
            _rig.Spec = ShadowRig.ExpectOk(ShadowRig.ExpectOk(_rig.Spec, new ShadowOp.ZapAll()), new ShadowOp.FlushTlb());
            _rig.CheckCounts(_rig.Spec, "after ZapAll + FlushTlb", pages: 1, leaves: 0, unsync: 0);
            _specStart = _rig.Spec;
            _rig.ReadAll(faulted: true, $"cold fault (cycle {cycle})");
            _rig.CheckCounts(_rig.Spec, "after the cold faults", pages: _pages, leaves: ColdChains, unsync: 0);
        }
        _specOps = _rig.SpecReads[..SpecColdOps];
        _rig.Print("Long4 one chain per page");
    }

    /// <summary>
    /// The one-leaf-table guest, populated; twice: every ZapRange of one gfn is Ok (and, with
    /// <paramref name="refault"/>, the read after it faults with the expected translation); the counts after.
    /// </summary>
    void SetupZap(bool refault)
    {
        Bind(new ShadowRig(ShadowGuestLayout.LeafTables(Mode.Long4, ShadowBenchmarks.LeafTables), allowUnsync: true));
        _rig.ReadAll(faulted: true, "populate");
        _pages = _vm.ShadowPages;
        _rig.CheckCounts(_rig.Spec, "after the populate", pages: _pages, leaves: Mappings, unsync: 0);
        _specStart = _rig.Spec;
        var ops = new List<ShadowOp>();
        for (int i = 0; i < SpecZapOps; i++)
        {
            ops.Add(new ShadowOp.ZapRange(_dataGfns[i], _dataGfns[i] + 1));
            if (refault)
                ops.Add(_rig.SpecReads[i]);
        }
        _specOps = [.. ops];

        for (int cycle = 0; cycle < 2; cycle++)
        {
            var spec = _specStart;
            for (int i = 0; i < Mappings; i++)
            {
                spec = ShadowRig.ExpectOk(spec, new ShadowOp.ZapRange(_dataGfns[i], _dataGfns[i] + 1));
                ShadowRig.ImplOk(_vm.ZapRange(_dataGfns[i], _dataGfns[i] + 1), $"zap of gfn {_dataGfns[i]:X}", _vm);
                if (refault)
                {
                    spec = _rig.SpecRead(spec, i, faulted: true, "refault");
                    _rig.ImplRead(i, faulted: true, "refault");
                }
            }
            _rig.CheckCounts(spec, "after the zaps", pages: _pages, leaves: refault ? Mappings : 0, unsync: 0);
            if (!refault)
            {
                _rig.Spec = spec;
                _rig.ReadAll(faulted: true, "re-arm"); // what RefaultImpl does, checked on both sides
                _rig.CheckCounts(_rig.Spec, "after the re-arm", pages: _pages, leaves: Mappings, unsync: 0);
            }
        }
        _rig.Print($"Long4, {ShadowBenchmarks.LeafTables} leaf tables");
    }

    enum StoreKind { Unsync, Emulated, Upper }

    /// <summary>
    /// The one-table-per-page guest, populated (root, PDPT, 2 directory pages, 1024 level-1 pages); the
    /// policy and the entries stored per <paramref name="kind"/>; twice: the measured sequence from the armed
    /// state, every result checked, the counts checked after it, then the re-arm (itself checked).
    /// </summary>
    void SetupStores(StoreKind kind)
    {
        Bind(new ShadowRig(ShadowGuestLayout.LeafTablePerMapping(StoreTables), allowUnsync: kind != StoreKind.Emulated));
        var layout = _rig.Layout;
        _rig.ReadAll(faulted: true, "populate");
        _pages = _vm.ShadowPages;
        if (_pages != layout.TablePages)
            throw new InvalidOperationException($"impl: {_pages} shadow pages after the populate, expected one per guest table ({layout.TablePages})");
        _rig.CheckCounts(_rig.Spec, "after the populate", pages: _pages, leaves: StoreTables, unsync: 0);
        _entryGpas = kind == StoreKind.Upper ? layout.Level2EntryGpas : layout.LeafEntryGpas;
        _entryValues = kind == StoreKind.Upper ? layout.Level2EntryValues : layout.LeafEntryValues;
        if (kind == StoreKind.Unsync)
        {
            ShadowRig.ImplOk(_vm.FlushTlb(), "FlushTlb", _vm);
            _rig.Spec = ShadowRig.ExpectOk(_rig.Spec, new ShadowOp.FlushTlb());
        }

        for (int cycle = 0; cycle < 2; cycle++)
        {
            _specStart = _rig.Spec;
            var spec = _specStart;
            for (int i = 0; i < StoreTables; i++)
            {
                spec = ShadowRig.ExpectOk(spec, new ShadowOp.GuestStore(_entryGpas[i], _entryValues[i], sizeof(ulong)));
                ShadowRig.ImplOk(_vm.GuestStore(_entryGpas[i], _entryValues[i], sizeof(ulong)), $"store {i}", _vm);
                if (kind == StoreKind.Upper)
                {
                    spec = _rig.SpecRead(spec, i, faulted: true, "read after the directory store");
                    _rig.ImplRead(i, faulted: true, "read after the directory store");
                }
            }
            switch (kind)
            {
                case StoreKind.Unsync:
                    // Every level-1 page unsync, every leaf still there.
                    _rig.CheckCounts(spec, "after the unsync stores", pages: _pages, leaves: StoreTables, unsync: StoreTables);
                    ResyncImpl();
                    _rig.Spec = ShadowRig.ExpectOk(spec, new ShadowOp.FlushTlb());
                    _rig.CheckCounts(_rig.Spec, "after FlushTlb", pages: _pages, leaves: StoreTables, unsync: 0);
                    break;
                case StoreKind.Emulated:
                    // Every written leaf removed, no page zapped, nothing unsync.
                    _rig.CheckCounts(spec, "after the emulated stores", pages: _pages, leaves: 0, unsync: 0);
                    _rig.Spec = spec;
                    _rig.ReadAll(faulted: true, "re-arm"); // what RefaultImpl does, checked on both sides
                    _rig.CheckCounts(_rig.Spec, "after the re-arm", pages: _pages, leaves: StoreTables, unsync: 0);
                    break;
                default:
                    // Every link removed and restored: no page zapped by flooding, every leaf there.
                    _rig.CheckCounts(spec, "after the directory stores", pages: _pages, leaves: StoreTables, unsync: 0);
                    _rig.Spec = spec;
                    break;
            }
        }

        var ops = new List<ShadowOp>();
        for (int i = 0; i < SpecStoreOps; i++)
        {
            ops.Add(new ShadowOp.GuestStore(_entryGpas[i], _entryValues[i], sizeof(ulong)));
            if (kind == StoreKind.Upper)
                ops.Add(_rig.SpecReads[i]);
        }
        _specOps = [.. ops];
        _rig.Print($"Long4 one page table per page ({kind} stores)");
    }

}

/// <summary>
/// Guest page tables for the shadow benchmarks: plain data, written into both sides' guest memory with
/// <c>GuestStore</c> before paging is turned on. Each mapping <c>i</c> is a path of table indexes from the
/// root level down to level 1 and maps the 4 KiB data frame <see cref="DataBaseGfn"/> + i; tables are
/// created on first use, from gfn <see cref="SlotBaseGfn"/> (the root first, at CR3). Every table entry
/// has P, R/W, U/S and A (a PAE PDPTE only P: the other bits are reserved there), every leaf also D, so no
/// walk writes anything back. One writable slot (<see cref="SlotId"/>) holds tables and data.
/// </summary>
public sealed class ShadowGuestLayout
{
    /// <summary>The slot: from gfn 0x100 (gpa 1 MiB); tables below <see cref="DataBaseGfn"/>, data frames from it.</summary>
    public const ulong SlotBaseGfn = 0x100, DataBaseGfn = 0x1000;

    /// <summary>The slot's host frames, from 4 GiB.</summary>
    public const ulong HostPfnBase = 0x10_0000;

    public const int SlotId = 0;

    const ulong P = 1UL << 0, Rw = 1UL << 1, Us = 1UL << 2, A = 1UL << 5, D = 1UL << 6;
    const ulong TableFlags = P | Rw | Us | A;
    const ulong LeafFlags = P | Rw | Us | A | D;

    public ShadowGuestLayout(Mode mode, IReadOnlyList<int[]> paths)
    {
        Mode = mode;
        Count = paths.Count;
        EntryBytes = mode == Mode.Bits32 ? 4 : 8;
        RootLevel = RootLevelOf(mode);
        Gvas = new ulong[Count];
        ExpectedGpas = new ulong[Count];
        ExpectedHpas = new ulong[Count];
        LeafEntryGpas = new ulong[Count];
        LeafEntryValues = new ulong[Count];
        Level2EntryGpas = new ulong[Count];
        Level2EntryValues = new ulong[Count];

        ulong nextTableGfn = SlotBaseGfn;
        Cr3 = nextTableGfn++ << 12;
        var children = new Dictionary<(ulong Table, int Index), ulong>();
        var writes = new List<EntryWrite>();
        for (int i = 0; i < Count; i++)
        {
            int[] path = paths[i];
            if (path.Length != RootLevel)
                throw new ArgumentException($"mapping {i}: {path.Length} indexes for {RootLevel} levels", nameof(paths));
            ulong dataGfn = DataBaseGfn + (ulong)i;
            ulong table = Cr3, gva = 0;
            for (int level = RootLevel; level >= 1; level--)
            {
                int index = path[RootLevel - level];
                int entries = mode == Mode.Pae && level == 3 ? 4 : mode == Mode.Bits32 ? 1024 : 512;
                if ((uint)index >= entries || (level == RootLevel && mode is (Mode.Long4 or Mode.Long5) && index >= 256))
                    throw new ArgumentException($"mapping {i}: index {index} at level {level} is out of range (or not canonical)", nameof(paths));
                gva |= (ulong)index << Shift(mode, level);
                ulong entryGpa = table + (ulong)(index * EntryBytes);
                if (level == 1)
                {
                    ulong leaf = (dataGfn << 12) | LeafFlags;
                    writes.Add(new EntryWrite(entryGpa, leaf, EntryBytes));
                    LeafEntryGpas[i] = entryGpa;
                    LeafEntryValues[i] = leaf;
                    break;
                }
                ulong value;
                if (children.TryGetValue((table, index), out ulong child))
                {
                    value = child | (mode == Mode.Pae && level == 3 ? P : TableFlags);
                }
                else
                {
                    child = nextTableGfn++ << 12;
                    if (nextTableGfn > DataBaseGfn)
                        throw new InvalidOperationException("guest tables overflow into the data frames");
                    children.Add((table, index), child);
                    value = child | (mode == Mode.Pae && level == 3 ? P : TableFlags);
                    writes.Add(new EntryWrite(entryGpa, value, EntryBytes));
                }
                if (level == 2)
                {
                    Level2EntryGpas[i] = entryGpa;
                    Level2EntryValues[i] = value;
                }
                table = child;
            }
            ulong offset = ((ulong)i * 0x48 + 0x10) & 0xFFF;
            Gvas[i] = gva | offset;
            ExpectedGpas[i] = (dataGfn << 12) | offset;
            ExpectedHpas[i] = ((HostPfnBase + dataGfn - SlotBaseGfn) << 12) | offset;
        }
        TablePages = (int)(nextTableGfn - SlotBaseGfn);
        SlotPages = DataBaseGfn - SlotBaseGfn + (ulong)Count;
        Writes = writes;
    }

    /// <summary>
    /// 512 pages per page table, <paramref name="tables"/> page tables under one page directory: a distinct
    /// non-zero index per level above the directory (PAE: PDPTE 2), directory entries 77.., then entries
    /// 0..511 of each page table (32-bit: its first half, so shadow quadrant 0, and all in root quadrant 0).
    /// </summary>
    public static ShadowGuestLayout LeafTables(Mode mode, int tables)
    {
        int rootLevel = RootLevelOf(mode);
        int IndexAt(int level) => mode == Mode.Pae && level == 3 ? 2 : level * 37 + 3;
        return new ShadowGuestLayout(mode, Enumerable.Range(0, tables * 512)
            .Select(i => Enumerable.Range(1, rootLevel).Reverse()
                .Select(level => level switch { 1 => i % 512, 2 => IndexAt(2) + i / 512, _ => IndexAt(level) }).ToArray())
            .ToList());
    }

    /// <summary>4-level: page i through PML4 entry i (its own PDPT, directory and table), then entries 1, 2, 3.</summary>
    public static ShadowGuestLayout ChainPerMapping(int count) =>
        new(Mode.Long4, Enumerable.Range(0, count).Select(i => new[] { i, 1, 2, 3 }).ToList());

    /// <summary>
    /// 4-level: PML4 entry 1, PDPT entry 2 + i / 512 (a directory per 512 pages), directory entry i % 512 (its own
    /// page table), whose entry 5 maps page i.
    /// </summary>
    public static ShadowGuestLayout LeafTablePerMapping(int count) =>
        new(Mode.Long4, Enumerable.Range(0, count).Select(i => new[] { 1, 2 + i / 512, i % 512, 5 }).ToList());

    public Mode Mode { get; }
    public int Count { get; }
    public int EntryBytes { get; }
    public int RootLevel { get; }

    /// <summary>CR3: the root table (the PDPT in PAE), at <see cref="SlotBaseGfn"/>.</summary>
    public ulong Cr3 { get; }

    public int TablePages { get; }
    public ulong SlotPages { get; }
    public IReadOnlyList<EntryWrite> Writes { get; }

    public ulong[] Gvas { get; }
    public ulong[] ExpectedGpas { get; }
    public ulong[] ExpectedHpas { get; }

    /// <summary>Per mapping: the gpa and value of its level-1 (leaf) entry and of the level-2 entry above it.</summary>
    public ulong[] LeafEntryGpas { get; }
    public ulong[] LeafEntryValues { get; }
    public ulong[] Level2EntryGpas { get; }
    public ulong[] Level2EntryValues { get; }

    static int RootLevelOf(Mode mode) => mode switch { Mode.Bits32 => 2, Mode.Pae => 3, Mode.Long4 => 4, _ => 5 };

    /// <summary>Linear-address bit where the index of <paramref name="level"/> starts.</summary>
    static int Shift(Mode mode, int level) => mode == Mode.Bits32 ? 12 + 10 * (level - 1) : 12 + 9 * (level - 1);
}

/// <summary>
/// One shadow VM on both sides with the same guest: the impl (<see cref="ShadowVm.Create"/> on its own
/// <see cref="NativePagePool"/>) and the spec (<see cref="Spec"/>, the current state), MAXPHYADDR 46, the
/// slot created, the layout's tables stored and paging on (CR0.WP and CR4.PSE, EFER.NXE outside 32-bit).
/// Checking helpers throw on any unexpected result. <see cref="Dispose"/> checks for native page leaks.
/// </summary>
internal sealed class ShadowRig : IDisposable
{
    public const int MaxPhyAddr = 46;

    /// <param name="withSpec">False: the impl only (<see cref="Spec"/> stays the empty initial state).</param>
    /// <param name="prefetch">Both sides prefetch neighbours (docs/shadow-model.md, "Prefetch").</param>
    public ShadowRig(ShadowGuestLayout layout, bool allowUnsync, bool withSpec = true, bool prefetch = false)
    {
        Layout = layout;
        Pool = new NativePagePool();
        Vm = ShadowVm.Create(MaxPhyAddr, allowUnsync, Pool, prefetch: prefetch);
        var spec = ShadowState.Create(new ShadowConfig(MaxPhyAddr, allowUnsync, prefetch: prefetch));

        const ulong slotBase = ShadowGuestLayout.SlotBaseGfn, hostBase = ShadowGuestLayout.HostPfnBase;
        if (withSpec)
            spec = ExpectOk(spec, new ShadowOp.CreateSlot(ShadowGuestLayout.SlotId, slotBase, layout.SlotPages, hostBase, ReadOnly: false));
        ImplOk(Vm.CreateSlot(ShadowGuestLayout.SlotId, slotBase, layout.SlotPages, hostBase, readOnly: false), "create slot", Vm);
        foreach (var w in layout.Writes)
        {
            if (withSpec)
                spec = ExpectOk(spec, new ShadowOp.GuestStore(w.Gpa, w.Value, w.Size));
            ImplOk(Vm.GuestStore(w.Gpa, w.Value, w.Size), $"table store at gpa {w.Gpa:X}", Vm);
        }
        if (withSpec)
            spec = ExpectOk(spec, new ShadowOp.GuestSetPaging(SpecControls(layout.Mode), layout.Cr3));
        ImplOk(Vm.GuestSetPaging(ImplControls(layout.Mode), layout.Cr3), "GuestSetPaging", Vm);
        Spec = spec;
        SpecReads = !withSpec ? [] : layout.Gvas.Select(g => (ShadowOp)new ShadowOp.GuestAccess(new S.Access(g, S.AccessType.Read, S.Privilege.User))).ToArray();
    }

    public ShadowGuestLayout Layout { get; }
    public NativePagePool Pool { get; }
    public IShadowVm Vm { get; }
    public ShadowState Spec { get; set; }

    /// <summary>A user-mode read of each mapping's gva, in the spec's vocabulary.</summary>
    public ShadowOp[] SpecReads { get; }

    public void Dispose()
    {
        Vm.Dispose();
        NativePageLeaks.DisposePool(Pool);
    }

    /// <summary>A read of every mapping on both sides (the spec from <see cref="Spec"/>, which advances), each checked.</summary>
    public void ReadAll(bool faulted, string what)
    {
        for (int i = 0; i < Layout.Count; i++)
        {
            Spec = SpecRead(Spec, i, faulted, what);
            ImplRead(i, faulted, what);
        }
    }

    public ShadowState SpecRead(ShadowState state, int i, bool faulted, string what)
    {
        var (after, result) = state.Step(SpecReads[i]);
        CheckSpecTranslated(result, i, faulted, what);
        return after;
    }

    public void ImplRead(int i, bool faulted, string what) =>
        CheckImplTranslated(Vm.GuestAccess(Layout.Gvas[i], I.AccessType.Read, I.Privilege.User), i, faulted, what);

    public void CheckSpecTranslated(VmResult result, int i, bool faulted, string what)
    {
        if (result is not ShadowResult.Translated t || t.Gpa != Layout.ExpectedGpas[i] || t.Hpa != Layout.ExpectedHpas[i] || t.Faulted != faulted)
            throw new InvalidOperationException($"spec ({what}): read of gva {Layout.Gvas[i]:X} gave {result}, expected {Expected(i, faulted)}");
    }

    public void CheckImplTranslated(ShadowOutcome outcome, int i, bool faulted, string what)
    {
        if (outcome.Status != ShadowStatus.Translated || outcome.Gpa != Layout.ExpectedGpas[i] || outcome.Hpa != Layout.ExpectedHpas[i] || outcome.Faulted != faulted)
            throw new InvalidOperationException($"impl ({what}): read of gva {Layout.Gvas[i]:X} gave {outcome}, expected {Expected(i, faulted)}");
    }

    string Expected(int i, bool faulted) =>
        $"gpa {Layout.ExpectedGpas[i]:X} at hpa {Layout.ExpectedHpas[i]:X}, {(faulted ? "faulted" : "a hit")}";

    /// <summary>Shadow pages, leaves and unsync pages: the same on both sides, and as expected.</summary>
    public void CheckCounts(ShadowState spec, string when, long pages, long leaves, long unsync)
    {
        long implLeaves = 0, implUnsync = 0;
        Vm.VisitPages((page, entries) =>
        {
            implLeaves += entries.Count(e => e.IsLeaf);
            implUnsync += page.Unsync ? 1 : 0;
        });
        var impl = (Vm.ShadowPages, implLeaves, implUnsync);
        var specCounts = ((long)spec.Pages.Count, (long)spec.Leaves().Count(), (long)spec.Pages.Values.Count(p => p.Unsync));
        if (impl != (pages, leaves, unsync) || specCounts != (pages, leaves, unsync))
            throw new InvalidOperationException(
                $"{when}: (pages, leaves, unsync pages) impl {impl}, spec {specCounts}, expected {(pages, leaves, unsync)}");
    }

    /// <summary>Every non-zero word of the impl's host memory, in visit order.</summary>
    public List<(ulong Hpa, ulong Value)> ImplHostMemory()
    {
        var words = new List<(ulong, ulong)>();
        Vm.VisitHostMemory((hpa, value) => words.Add((hpa, value)));
        return words;
    }

    /// <summary>The impl's shadow pages and the MMU's pool pages (slabs and pte-list pages), into the log.</summary>
    public void Print(string what)
    {
        long mmuPages = Pool.PagesInUse - Pool.LazilyZeroedPagesInUse;
        Console.WriteLine(
            $"// Shadow {what} (impl): {Layout.Count} mappings, {Layout.TablePages} guest tables, {Vm.ShadowPages} shadow pages; " +
            $"MMU pool pages held (whole 64-page slabs, pte-list pages) = {mmuPages} = {(double)mmuPages * NativePagePool.PageSize / Layout.Count:F1} bytes per mapping");
        Console.WriteLine(
            $"// Shadow: ShadowVm.DirectPageHeaderBytes = {ShadowVm.DirectPageHeaderBytes}, ShadowVm.IndirectPageBytes = {ShadowVm.IndirectPageBytes} (besides each page's 4 KiB table)");
    }

    public static ShadowState ExpectOk(ShadowState state, ShadowOp op)
    {
        var (after, result) = state.Step(op);
        return result is VmResult.Ok ? after : throw new InvalidOperationException($"spec: {op} gave {result}");
    }

    public static void ImplOk(ShadowOutcome outcome, string what, IShadowVm vm)
    {
        if (outcome.Status != ShadowStatus.Ok)
            throw new InvalidOperationException($"impl: {what} gave {outcome} {vm.LastRejection}");
    }

    public static void ImplOk(SlotStatus status, string what, IShadowVm vm)
    {
        if (status != SlotStatus.Ok)
            throw new InvalidOperationException($"impl: {what} gave {status} {vm.LastRejection}");
    }

    static S.PagingControls SpecControls(Mode mode) => new(
        mode switch { Mode.Bits32 => S.PagingMode.Bits32, Mode.Pae => S.PagingMode.Pae, Mode.Long4 => S.PagingMode.Long4, _ => S.PagingMode.Long5 },
        cr0Wp: true, cr4Pse: true, eferNxe: mode != Mode.Bits32, maxPhyAddr: MaxPhyAddr);

    static I.PagingControls ImplControls(Mode mode) => new(
        mode switch { Mode.Bits32 => I.PagingMode.Bits32, Mode.Pae => I.PagingMode.Pae, Mode.Long4 => I.PagingMode.Long4, _ => I.PagingMode.Long5 },
        Cr0Wp: true, Cr4Pse: true, Cr4Smep: false, Cr4Smap: false, Cr4Pke: false,
        EferNxe: mode != Mode.Bits32, EflagsAc: false, Pkru: 0, MaxPhyAddr: MaxPhyAddr);
}

/// <summary>
/// JIT warm-up for benchmarks with an [IterationSetup] (one invocation per iteration, so the quick job's 3
/// warmup iterations are far too few for tiered compilation; see <see cref="TdpBenchmarks"/>): runs
/// <c>reset</c> then <c>body</c> at least 40 times and for at least 1 s, or for 6 s and at least 3 times,
/// and prints what it did into the log.
/// </summary>
internal static class ShadowWarmUp
{
    const int Runs = 40;
    static readonly TimeSpan MinTime = TimeSpan.FromSeconds(1), MaxTime = TimeSpan.FromSeconds(6);

    public static void Run(string name, Action reset, Func<object> body)
    {
        var total = Stopwatch.StartNew();
        double first = 0, last = 0;
        int runs = 0;
        while ((runs < Runs || total.Elapsed < MinTime) && !(runs >= 3 && total.Elapsed >= MaxTime))
        {
            reset();
            long start = Stopwatch.GetTimestamp();
            GC.KeepAlive(body());
            last = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            if (runs++ == 0)
                first = last;
        }
        Console.WriteLine($"// Shadow warm-up of {name}: {runs} runs in {total.Elapsed.TotalSeconds:F1} s; first run {first:F3} ms, last run {last:F3} ms");
    }
}
