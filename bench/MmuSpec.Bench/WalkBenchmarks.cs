using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using I = MmuSpec.Impl.Paging;
using S = MmuSpec.Spec.Paging;

namespace MmuSpec.Bench;

/// <summary>
/// A warm page walk (every A bit and the leaves' D bits already set, so nothing is written back) of
/// <see cref="Walks"/> different mapped pages in the same tables, in the spec
/// (<see cref="S.PageWalk.Translate"/>) and the impl (<see cref="I.GuestVcpu.Access"/>), per paging
/// mode and leaf size. Each benchmark invocation walks all the gvas once and reports per-walk time
/// (OperationsPerInvoke). The spec is the baseline of each category (Read, Write) within each
/// (Mode, Page) pair, so the Ratio column compares impl with spec from the same run; it is shown as
/// a trend ("85.12x faster") because impl/spec is about 0.01, too small for the default 2 decimals.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByParams, BenchmarkLogicalGroupRule.ByCategory)]
public class WalkBenchmarks : ImplVsSpecBenchmark
{
    /// <summary>Different gvas walked per invocation: consecutive leaf entries of one leaf table.</summary>
    public const int Walks = 64;

    const int MaxPhyAddr = 46;

    [Params(Mode.Bits32, Mode.Pae, Mode.Long4, Mode.Long5)]
    public Mode Mode { get; set; }

    [Params(Page.Small4K, Page.Large)]
    public Page Page { get; set; }

    NativePagePool _pool = null!;
    GuestPhysicalMemory _implMemory = null!;
    I.GuestVcpu _vcpu = null!;

    GuestMemory _specMemory = null!;
    S.CpuState _specCpu = null!;
    S.Access[] _specReads = null!;
    S.Access[] _specWrites = null!;

    ulong[] _gvas = null!;

    [GlobalSetup]
    public void Setup()
    {
        var layout = new PageTableLayout(Mode, Page, Walks);
        _gvas = layout.Gvas;

        // Spec: an immutable memory with the entries written into one memslot.
        var specMemory = GuestMemory.FromSlots([new Memslot(PageTableLayout.SlotBaseGfn, PageTableLayout.SlotPages)]);
        foreach (var w in layout.Writes)
            specMemory = specMemory.Write(w.Gpa, w.Value, w.Size);
        _specMemory = specMemory;
        var machine = GuestMachine.Boot(SpecControls(Mode), layout.Cr3, specMemory)
            ?? throw new InvalidOperationException($"spec: MOV CR3 {layout.Cr3:X} raised #GP");
        _specCpu = machine.Cpu;
        _specReads = _gvas.Select(g => new S.Access(g, S.AccessType.Read, S.Privilege.User)).ToArray();
        _specWrites = _gvas.Select(g => new S.Access(g, S.AccessType.Write, S.Privilege.User)).ToArray();

        // Impl: the same entries at the same gpas, in native memory.
        _pool = new NativePagePool();
        _implMemory = new GuestPhysicalMemory(_pool);
        _implMemory.AddSlot(PageTableLayout.SlotBaseGfn, PageTableLayout.SlotPages);
        foreach (var w in layout.Writes)
        {
            bool ok = w.Size == 8 ? _implMemory.TryWrite64(w.Gpa, w.Value) : _implMemory.TryWrite32(w.Gpa, (uint)w.Value);
            if (!ok)
                throw new InvalidOperationException($"impl: entry gpa {w.Gpa:X} is not backed");
        }
        _vcpu = new I.GuestVcpu(_implMemory, ImplControls(Mode), layout.Cr3);

        Verify(layout);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _implMemory.Dispose();
        NativePageLeaks.DisposePool(_pool);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Walks), BenchmarkCategory("Read")]
    public ulong SpecRead()
    {
        S.CpuState cpu = _specCpu;
        GuestMemory memory = _specMemory;
        ulong sum = 0;
        foreach (var access in _specReads)
            sum += ((S.WalkResult.Translated)S.PageWalk.Translate(cpu, memory, access).Result).Gpa;
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Walks), BenchmarkCategory("Read")]
    public ulong ImplRead()
    {
        I.GuestVcpu vcpu = _vcpu;
        ulong sum = 0;
        foreach (ulong gva in _gvas)
            sum += vcpu.Access(gva, I.AccessType.Read, I.Privilege.User).Gpa;
        return sum;
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Walks), BenchmarkCategory("Write")]
    public ulong SpecWrite()
    {
        S.CpuState cpu = _specCpu;
        GuestMemory memory = _specMemory;
        ulong sum = 0;
        foreach (var access in _specWrites)
            sum += ((S.WalkResult.Translated)S.PageWalk.Translate(cpu, memory, access).Result).Gpa;
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Walks), BenchmarkCategory("Write")]
    public ulong ImplWrite()
    {
        I.GuestVcpu vcpu = _vcpu;
        ulong sum = 0;
        foreach (ulong gva in _gvas)
            sum += vcpu.Access(gva, I.AccessType.Write, I.Privilege.User).Gpa;
        return sum;
    }

    static S.PagingControls SpecControls(Mode mode) => new(
        SpecMode(mode), cr0Wp: true, cr4Pse: true, eferNxe: mode != Mode.Bits32, maxPhyAddr: MaxPhyAddr);

    static I.PagingControls ImplControls(Mode mode) => new(
        ImplMode(mode), Cr0Wp: true, Cr4Pse: true, Cr4Smep: false, Cr4Smap: false, Cr4Pke: false,
        EferNxe: mode != Mode.Bits32, EflagsAc: false, Pkru: 0, MaxPhyAddr: MaxPhyAddr);

    static S.PagingMode SpecMode(Mode mode) => mode switch
    {
        Mode.Bits32 => S.PagingMode.Bits32,
        Mode.Pae => S.PagingMode.Pae,
        Mode.Long4 => S.PagingMode.Long4,
        Mode.Long5 => S.PagingMode.Long5,
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };

    static I.PagingMode ImplMode(Mode mode) => mode switch
    {
        Mode.Bits32 => I.PagingMode.Bits32,
        Mode.Pae => I.PagingMode.Pae,
        Mode.Long4 => I.PagingMode.Long4,
        Mode.Long5 => I.PagingMode.Long5,
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };


    /// <summary>
    /// Before measuring: both sides translate every gva, for read and write, to the expected gpa and
    /// page size, and neither writes anything (the walks are warm). Throws otherwise.
    /// </summary>
    void Verify(PageTableLayout layout)
    {
        byte[] implBefore = _implMemory.SlotBytes(0).ToArray();
        for (int i = 0; i < _gvas.Length; i++)
        {
            foreach (var access in new[] { _specReads[i], _specWrites[i] })
            {
                var (result, after) = S.PageWalk.Translate(_specCpu, _specMemory, access);
                if (result is not S.WalkResult.Translated t || t.Gpa != layout.ExpectedGpas[i] || S.PageSizes.Shift(t.Size) != layout.PageShift)
                    throw new InvalidOperationException($"spec: {access} gave {result}, expected gpa {layout.ExpectedGpas[i]:X}");
                if (!ReferenceEquals(after, _specMemory))
                    throw new InvalidOperationException($"spec: {access} wrote A/D bits; the walk is not warm");
            }
            foreach (var type in new[] { I.AccessType.Read, I.AccessType.Write })
            {
                var outcome = _vcpu.Access(_gvas[i], type, I.Privilege.User);
                if (outcome.Status != I.WalkStatus.Translated || outcome.Gpa != layout.ExpectedGpas[i] || outcome.PageShift != layout.PageShift)
                    throw new InvalidOperationException($"impl: {type} of {_gvas[i]:X} gave {outcome}, expected gpa {layout.ExpectedGpas[i]:X}");
            }
        }
        if (!_implMemory.SlotBytes(0).SequenceEqual(implBefore))
            throw new InvalidOperationException("impl: a walk wrote A/D bits; the walk is not warm");
    }
}
