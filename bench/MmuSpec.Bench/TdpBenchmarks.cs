using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Tdp;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using I = MmuSpec.Impl.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// The TDP MMU (docs/tdp-model.md) in the spec (<see cref="TdpState.Step"/>) and the impl
/// (<see cref="ITdpVm.Access"/>), one EPT VM without a shared bit, one 1 GiB memslot (gfn
/// <see cref="SlotBaseGfn"/>, <see cref="SlotPages"/> frames, backed by 1 GiB-aligned host frames in
/// 1 GiB host pages):
/// <list type="bullet">
/// <item><b>Fault4K</b>: with the policy at 4 KiB, a write to every 4 KiB page of the slot, from an empty
/// MMU: 262,144 faults, each installing a 4 KiB leaf (and the tables above it on the way).</item>
/// <item><b>Fault2M</b>: the same with the policy at 2 MiB: 512 faults, each installing a 2 MiB leaf.</item>
/// <item><b>Hit</b>: reads of <see cref="HitPages"/> pages of a slot already populated with 4 KiB
/// leaves (one page in <see cref="HitStride"/>, across the whole GiB): no fault, the walk only.</item>
/// </list>
/// Times are per fault or per hit (OperationsPerInvoke). The fault benchmarks start every invocation
/// from an empty MMU: an [IterationSetup] zaps the impl's tables (the slabs stay with the VM, so a
/// measured populate reuses its freed tables and never calls the pool). BDN then runs one invocation
/// per iteration, which it advises against for short workloads; a 4 KiB populate takes milliseconds, a
/// 2 MiB one microseconds (see docs/performance.md). The spec is immutable, so each of its
/// invocations starts again from the empty state; it gets an empty [IterationSetup] too, so both sides
/// run alike and share a job group. Because one invocation per iteration leaves the quick job's 3
/// warmup iterations far too few for tiered compilation, each fault benchmark's setup first runs the
/// benchmark itself until its code is warm (<see cref="WarmUp"/>). Setup also checks every fault of a
/// whole-slot populate and prints the impl's table memory per mapping into the log. The spec is the
/// baseline of each category, so the Ratio column compares impl with spec from the same run; shown as
/// a trend ("123.45x faster").
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class TdpBenchmarks : ImplVsSpecBenchmark
{
    /// <summary>The slot: 1 GiB at gfn 0x40000 (gpa 1 GiB).</summary>
    public const ulong SlotBaseGfn = 0x40000, SlotPages = 0x40000;

    /// <summary>Host frames from 4 GiB: 1 GiB-aligned, so gfn and host frame are equally aligned for every size.</summary>
    public const ulong HostPfnBase = 0x100000;

    public const int Faults4K = (int)SlotPages;           // 262,144
    public const int Faults2M = (int)(SlotPages / 512);   // 512

    /// <summary>Pages read per Hit invocation: one every <see cref="HitStride"/> pages, spanning the slot.</summary>
    public const int HitPages = 4096, HitStride = (int)SlotPages / HitPages;

    const int SlotId = 0;
    const int WarmUpRuns = 40;
    static readonly TimeSpan WarmUpTime = TimeSpan.FromSeconds(1), WarmUpMaxTime = TimeSpan.FromSeconds(6);
    const byte Shift4K = 12, Shift2M = 21, Shift1G = 30;

    NativePagePool _pool = null!;
    ITdpVm _vm = null!;

    TdpState _specEmpty4K = null!;
    TdpState _specEmpty2M = null!;
    TdpState _specPopulated = null!;
    TdpOp[] _specWrites4K = null!;
    TdpOp[] _specWrites2M = null!;
    TdpOp[] _specHitReads = null!;

    // ---- setup and cleanup ----

    [GlobalSetup(Target = nameof(SpecFault4K))]
    public void SetupSpecFault4K() => SetupFaults(nameof(SpecFault4K), () => { }, () => SpecFault4K());

    [GlobalSetup(Target = nameof(ImplFault4K))]
    public void SetupImplFault4K() => SetupFaults(nameof(ImplFault4K), EmptyImpl4K, () => ImplFault4K());

    [GlobalSetup(Target = nameof(SpecFault2M))]
    public void SetupSpecFault2M() => SetupFaults(nameof(SpecFault2M), () => { }, () => SpecFault2M());

    [GlobalSetup(Target = nameof(ImplFault2M))]
    public void SetupImplFault2M() => SetupFaults(nameof(ImplFault2M), EmptyImpl2M, () => ImplFault2M());

    /// <summary>Both sides populated with 4 KiB leaves (a write to every page), for the hit benchmarks.</summary>
    [GlobalSetup(Targets = [nameof(SpecHit), nameof(ImplHit)])]
    public void SetupHits()
    {
        CreateBoth();
        _vm.SetMaxPageSize(Shift4K);
        for (ulong i = 0; i < SlotPages; i++)
            _vm.Access(Gpa(i), I.AccessType.Write);
        var state = _specEmpty4K;
        foreach (var op in _specWrites4K)
            state = state.Step(op).State;
        _specPopulated = state;

        // Every hit read: same hpa and size on both sides, no fault, and the spec's state unchanged.
        for (int k = 0; k < HitPages; k++)
        {
            ulong gpa = Gpa((ulong)k * HitStride);
            var (after, result) = _specPopulated.Step(_specHitReads[k]);
            var outcome = _vm.Access(gpa, I.AccessType.Read);
            if (result is not TdpResult.Mapped { Faulted: false, Size: PageSize.Size4K } m || m.Hpa != ExpectedHpa(gpa))
                throw new InvalidOperationException($"spec: read of gpa {gpa:X} gave {result}, expected a 4K hit at hpa {ExpectedHpa(gpa):X}");
            if (!ReferenceEquals(after, _specPopulated))
                throw new InvalidOperationException($"spec: read of gpa {gpa:X} changed the state; it is not a hit");
            if (outcome.Status != TdpAccessStatus.Mapped || outcome.Faulted || outcome.PageShift != Shift4K || outcome.Hpa != m.Hpa)
                throw new InvalidOperationException($"impl: read of gpa {gpa:X} gave {outcome}, expected the spec's {result}");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        NativePageLeaks.DisposePool(_pool);
    }

    /// <summary>Every impl fault invocation starts from an empty MMU (the slot and the policy stay).</summary>
    [IterationSetup(Target = nameof(ImplFault4K))]
    public void EmptyImpl4K() => ResetImpl(Shift4K);

    [IterationSetup(Target = nameof(ImplFault2M))]
    public void EmptyImpl2M() => ResetImpl(Shift2M);

    /// <summary>
    /// Nothing to empty: the spec is immutable and each invocation starts from the empty state itself.
    /// Declared so that BDN runs the spec's faults like the impl's (one invocation per iteration, no
    /// unrolling), which keeps both in one job group and so gives the Ratio column.
    /// </summary>
    [IterationSetup(Targets = [nameof(SpecFault4K), nameof(SpecFault2M)])]
    public void EmptySpec() { }

    // ---- benchmarks ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Faults4K), BenchmarkCategory("Fault4K")]
    public TdpState SpecFault4K()
    {
        TdpState state = _specEmpty4K;
        foreach (TdpOp op in _specWrites4K)
            state = state.Step(op).State;
        return state;
    }

    [Benchmark(OperationsPerInvoke = Faults4K), BenchmarkCategory("Fault4K")]
    public ulong ImplFault4K()
    {
        ITdpVm vm = _vm;
        ulong sum = 0;
        for (ulong i = 0; i < SlotPages; i++)
            sum += vm.Access(Gpa(i), I.AccessType.Write).Hpa;
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Faults2M), BenchmarkCategory("Fault2M")]
    public TdpState SpecFault2M()
    {
        TdpState state = _specEmpty2M;
        foreach (TdpOp op in _specWrites2M)
            state = state.Step(op).State;
        return state;
    }

    [Benchmark(OperationsPerInvoke = Faults2M), BenchmarkCategory("Fault2M")]
    public ulong ImplFault2M()
    {
        ITdpVm vm = _vm;
        ulong sum = 0;
        for (ulong i = 0; i < SlotPages; i += 512)
            sum += vm.Access(Gpa(i), I.AccessType.Write).Hpa;
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = HitPages), BenchmarkCategory("Hit")]
    public ulong SpecHit()
    {
        TdpState state = _specPopulated;
        ulong sum = 0;
        foreach (TdpOp op in _specHitReads)
            sum += ((TdpResult.Mapped)state.Step(op).Result).Hpa;
        return sum;
    }

    [Benchmark(OperationsPerInvoke = HitPages), BenchmarkCategory("Hit")]
    public ulong ImplHit()
    {
        ITdpVm vm = _vm;
        ulong sum = 0;
        for (ulong i = 0; i < SlotPages; i += HitStride)
            sum += vm.Access(Gpa(i), I.AccessType.Read).Hpa;
        return sum;
    }

    // ---- helpers ----

    static ulong Gpa(ulong page) => (SlotBaseGfn + page) << 12;

    static ulong ExpectedHpa(ulong gpa) => ((HostPfnBase + ((gpa >> 12) - SlotBaseGfn)) << 12) | (gpa & 0xFFF);

    /// <summary>
    /// Both sides, empty MMUs with the slot; the populate checked and the impl's memory per mapping
    /// printed (<see cref="VerifyPopulate"/>); then a JIT warm-up of the benchmark itself.
    /// </summary>
    void SetupFaults(string name, Action reset, Func<object> body)
    {
        CreateBoth();
        VerifyPopulate(Shift4K, PageSize.Size4K, Faults4K, sizeName: "4 KiB");
        VerifyPopulate(Shift2M, PageSize.Size2M, Faults2M, sizeName: "2 MiB");
        Console.WriteLine($"// TDP: TdpVm.PageHeaderBytes = {TdpVm.PageHeaderBytes} (KVM's struct kvm_mmu_page: ~184 bytes)");
        WarmUp(name, reset, body);
    }

    /// <summary>
    /// Runs <paramref name="body"/> (after <paramref name="reset"/>, as BDN does) until it has run at
    /// least <see cref="WarmUpRuns"/> times and for <see cref="WarmUpTime"/>, or for
    /// <see cref="WarmUpMaxTime"/> and at least 3 times. With one invocation per iteration, the quick
    /// job's 3 warmup iterations are far too few for tiered compilation: the first run of this suite
    /// measured its first ~8 impl 4 KiB populates at ~105 ns per fault (tier-0 / OSR code) and the
    /// later ones at ~18.5 ns. This brings the code to its steady (tier-1) state before BDN measures.
    /// </summary>
    static void WarmUp(string name, Action reset, Func<object> body)
    {
        var total = Stopwatch.StartNew();
        double first = 0, last = 0;
        int runs = 0;
        while ((runs < WarmUpRuns || total.Elapsed < WarmUpTime) && !(runs >= 3 && total.Elapsed >= WarmUpMaxTime))
        {
            reset();
            long start = Stopwatch.GetTimestamp();
            GC.KeepAlive(body());
            last = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            if (runs++ == 0)
                first = last;
        }
        Console.WriteLine($"// TDP warm-up of {name}: {runs} runs in {total.Elapsed.TotalSeconds:F1} s; first run {first:F3} ms, last run {last:F3} ms");
    }

    void CreateBoth()
    {
        _pool = new NativePagePool();
        _vm = TdpVm.Create(TdpFormatKind.Ept, null, _pool);
        if (_vm.CreateSlot(SlotId, SlotBaseGfn, SlotPages, HostPfnBase, Shift1G, readOnly: false) != SlotStatus.Ok)
            throw new InvalidOperationException($"impl: create slot rejected: {_vm.LastRejection}");

        var spec = Expect(TdpState.Create(new VmConfig(TdpFormat.Ept)),
            new TdpOp.CreateSlot(SlotId, SlotBaseGfn, SlotPages, HostPfnBase, PageSize.Size1G, ReadOnly: false));
        _specEmpty4K = Expect(spec, new TdpOp.SetMaxPageSize(PageSize.Size4K));
        _specEmpty2M = Expect(spec, new TdpOp.SetMaxPageSize(PageSize.Size2M));
        _specWrites4K = Enumerable.Range(0, Faults4K).Select(i => (TdpOp)new TdpOp.AccessGpa(Gpa((ulong)i), AccessType.Write)).ToArray();
        _specWrites2M = Enumerable.Range(0, Faults2M).Select(i => (TdpOp)new TdpOp.AccessGpa(Gpa((ulong)i * 512), AccessType.Write)).ToArray();
        _specHitReads = Enumerable.Range(0, HitPages).Select(i => (TdpOp)new TdpOp.AccessGpa(Gpa((ulong)i * HitStride), AccessType.Read)).ToArray();
    }

    static TdpState Expect(TdpState state, TdpOp op)
    {
        var (after, result) = state.Step(op);
        return result is VmResult.Ok ? after : throw new InvalidOperationException($"spec: {op} gave {result}");
    }

    void ResetImpl(byte maxPageShift)
    {
        if (_vm.ZapAll() != TdpStatus.Ok || _vm.SetMaxPageSize(maxPageShift) != TdpStatus.Ok || _vm.TablePages != 0)
            throw new InvalidOperationException($"impl: could not empty the MMU: {_vm.LastRejection}");
    }

    /// <summary>
    /// Before measuring: one populate of the whole slot by a fresh impl VM (its own pool), every fault
    /// checked against the expected hpa and leaf size, and the first 512 against the spec's results;
    /// then that VM's table memory per mapping, printed so it lands in the log. Throws on a mismatch
    /// or a leak.
    /// </summary>
    void VerifyPopulate(byte maxPageShift, PageSize size, int faults, string sizeName)
    {
        using var pool = new NativePagePool();
        using (ITdpVm vm = TdpVm.Create(TdpFormatKind.Ept, null, pool))
        {
            if (vm.CreateSlot(SlotId, SlotBaseGfn, SlotPages, HostPfnBase, Shift1G, readOnly: false) != SlotStatus.Ok
                || vm.SetMaxPageSize(maxPageShift) != TdpStatus.Ok)
                throw new InvalidOperationException($"impl: {vm.LastRejection}");
            ulong stride = SlotPages / (ulong)faults;
            TdpState spec = maxPageShift == Shift4K ? _specEmpty4K : _specEmpty2M;
            TdpOp[] specOps = maxPageShift == Shift4K ? _specWrites4K : _specWrites2M;
            for (int k = 0; k < faults; k++)
            {
                ulong gpa = Gpa((ulong)k * stride);
                var outcome = vm.Access(gpa, I.AccessType.Write);
                if (outcome.Status != TdpAccessStatus.Mapped || !outcome.Faulted || outcome.PageShift != maxPageShift || outcome.Hpa != ExpectedHpa(gpa))
                    throw new InvalidOperationException($"impl: write of gpa {gpa:X} gave {outcome}, expected a {sizeName} fault at hpa {ExpectedHpa(gpa):X}");
                if (k < 512)
                {
                    var (next, result) = spec.Step(specOps[k]);
                    if (result is not TdpResult.Mapped { Faulted: true } m || m.Size != size || m.Hpa != outcome.Hpa)
                        throw new InvalidOperationException($"spec: {specOps[k]} gave {result}, the impl {outcome}");
                    spec = next;
                }
            }

            long leaves = 0;
            vm.VisitPages((_, entries) => leaves += entries.Count(e => e.IsLeaf));
            if (leaves != faults)
                throw new InvalidOperationException($"impl: {leaves} leaves after {faults} faults");
            long tables = vm.TablePages;
            long tableBytes = tables * (NativePagePool.PageSize + TdpVm.PageHeaderBytes);
            // The slot's guest memory is a lazily zeroed reservation counted by the pool too; only
            // the MMU's own pages (whole 64-page slabs) count toward bytes per mapping.
            long mmuPages = pool.PagesInUse - pool.LazilyZeroedPagesInUse;
            long poolBytes = mmuPages * NativePagePool.PageSize;
            Console.WriteLine(
                $"// TDP {sizeName} populate of 1 GiB (impl): {leaves} mappings, {tables} table pages; " +
                $"tables + headers = {tables} * ({NativePagePool.PageSize} + {TdpVm.PageHeaderBytes}) B = {tableBytes} B = {(double)tableBytes / leaves:F2} bytes per mapping; " +
                $"MMU pool pages held (whole 64-page slabs) = {mmuPages} = {(double)poolBytes / leaves:F2} bytes per mapping");
        }
        NativePageLeaks.Check(pool, "after the check");
    }

}
