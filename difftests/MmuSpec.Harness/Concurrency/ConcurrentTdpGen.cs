using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// Programs for the concurrent TDP property: FsCheck draws a seed and a size, a deterministic builder turns
/// them into a case (so every case replays from FsCheck's seed). Two or three vCPU threads of one to three
/// ops each, over gfns chosen to share tables: a 2 MiB-backed slot whose first region's 4 KiB faults share one
/// leaf table (which a 2 MiB fault later replaces under the read lock, retiring it), sometimes a 4 KiB-backed
/// slot beside it whose faults take fresh tables (reusing a freed one), and now and then a write-side op
/// (a policy change, a zap, dirty logging switched) between them. Gfns at index 0 of a leaf table are left
/// out: there a freed table keeps its free-list link, and a mutant that walks freed memory would corrupt the
/// allocator instead of answering wrongly.
/// <para>
/// Host invalidations, the dirty log and the lockless fast fault come from a second stream of the same seed
/// (<see cref="AddNotifierAndFastFaults"/>), drawn after the ops above, so those ops stay what the seed drew before;
/// aging and write tracking from a third (<see cref="AddAgingAndWriteTracking"/>), which leaves the first two as they were.
/// </para>
/// </summary>
public static partial class ConcurrentTdpGen
{
    /// <summary>Schedules per strategy per case: bounded so a case costs about as much as a batch of sequential cases.</summary>
    public const uint IterationsPerStrategy = 10;

    static readonly ulong[] Gfns = [0x1, 0x2, 0x5, 0x7, 0x1ff, 0x201, 0x203, 0x405, 0x407];
    static readonly ulong[] Prefaulted = [0x1, 0x1ff, 0x201];
    static readonly ulong[] Holes = [.. Gfns.Except(Prefaulted)];

    public static Gen<ConcurrentTdpCase> Case(VmConfig config) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => Build(seed, size, config)));

    public static Arbitrary<ConcurrentTdpCase> Arbitrary(VmConfig config) => Arb.From(Case(config), Shrink);

    /// <summary>The program shrinker's candidates (a thread fewer, then an op fewer), the schedule bounds kept.</summary>
    public static IEnumerable<ConcurrentTdpCase> Shrink(ConcurrentTdpCase c) =>
        ProgramShrinker.Candidates(c.Program).Select(c.WithProgram);

    public static ConcurrentTdpCase Build(int seed, int size, VmConfig config)
    {
        var rng = new Random(seed);
        var setup = ImmutableArray.CreateBuilder<TdpOp>();
        setup.Add(new TdpOp.CreateSlot(0, BaseGfn: 0, Pages: 0x400, HostPfnBase: 0x100000, PageSize.Size2M, ReadOnly: rng.Next(20) == 0));
        bool second = rng.Next(2) == 0;
        if (second) setup.Add(SecondSlot());
        if (rng.Next(10) < 6)
        {
            // 4 KiB leaves faulted in first (on vCPU 0) in both 2 MiB regions of slot 0, so the threads' first
            // 2 MiB faults replace leaf tables under the read lock while the others walk them (frozen entries,
            // retired tables), and two replacements at once keep each other's table waiting (a deferred free).
            // The threads' accesses go mostly to the holes beside these (a leaf already there is a hit, not a replacement).
            setup.Add(new TdpOp.SetMaxPageSize(PageSize.Size4K));
            foreach (var gfn in Prefaulted.Where(g => g != 0x1ff || rng.Next(3) == 0))
                setup.Add(new TdpOp.AccessGpa(gfn << 12, AccessType.Read));
            if (rng.Next(10) < 8) setup.Add(new TdpOp.SetMaxPageSize(PageSize.Size2M));
        }
        else setup.Add(new TdpOp.SetMaxPageSize(rng.Next(10) < 7 ? PageSize.Size4K : PageSize.Size2M));
        if (rng.Next(5) == 0) setup.Add(new TdpOp.SetDirtyLogging(0, true));

        int threads = 2 + rng.Next(2);
        int most = size < 30 ? 2 : 3;
        var program = new List<IReadOnlyList<TdpOp>>();
        for (int t = 0; t < threads; t++)
        {
            int count = 1 + rng.Next(most);
            program.Add([.. Enumerable.Range(0, count).Select(_ => NextOp(rng, second))]);
        }
        AddNotifierAndFastFaults(new Random(seed ^ SecondStream), setup, program, second);
        uint scheduleSeed = (uint)rng.Next();
        config = AddAgingAndWriteTracking(new Random(seed ^ ThirdStream), config, setup, program);
        // Read-side aging racing write hits that set D (ConcurrentTdpGen.Aging.cs), wherever the third stream drew no
        // write tracking (whose writes must reach the fast path, which A/D tracking closes) and kept D.
        if (config.AccessedDirty != AccessedDirty.Disabled && !program.Any(ops => ops.Any(op => op is TdpOp.TrackWrites)))
            config = AddAging(new Random(seed ^ FourthStream), config, setup, program);
        return new ConcurrentTdpCase(config, setup.ToImmutable(), new(program), scheduleSeed, IterationsPerStrategy);
    }

    const int SecondStream = 0x4E07;

    /// <summary>The aging draws' stream (ConcurrentTdpGen.Aging.cs), after both others.</summary>
    const int FourthStream = 0x5A6E;

    /// <summary>Gfn 0x9: a leaf faulted in by the setup before dirty logging turns on, which logging makes read-only.</summary>
    const ulong LoggedGfn = 0x9;

    static readonly (ulong Start, ulong End)[] Invalidations = [(0, 0x200), (0x1, 0x8), (0x200, 0x400), (0x400, 0x600)];

    /// <summary>
    /// In about a third of the cases one thread runs a host invalidation (Start, then End of the same range) around
    /// or after its ops, so the others' faults in the range retry while it is open or once the sequence moved. In
    /// about a third, the setup faults gfn 0x9 in (4 KiB, or 2 MiB when the policy allows it) and turns dirty
    /// logging on, and one or two threads write it: the fast fault makes a 4 KiB leaf writable without mmu_lock,
    /// and leaves a huge leaf (or an exchange it lost to the other writer) to the slow path; now and then a thread
    /// reads the dirty log.
    /// </summary>
    static void AddNotifierAndFastFaults(Random rng, ImmutableArray<TdpOp>.Builder setup, List<IReadOnlyList<TdpOp>> program, bool second)
    {
        if (rng.Next(3) == 0)
        {
            var (start, end) = Invalidations[rng.Next(second ? 4 : 3)];
            int t = rng.Next(program.Count);
            var ops = program[t].ToList();
            ops.Insert(rng.Next(ops.Count + 1), new TdpOp.HostInvalidateStart(start, end));
            ops.Add(new TdpOp.HostInvalidateEnd(start, end));
            program[t] = ops;
        }
        if (rng.Next(3) == 0)
        {
            setup.Add(new TdpOp.AccessGpa(LoggedGfn << 12, AccessType.Read));
            if (!setup.Any(op => op is TdpOp.SetDirtyLogging)) setup.Add(new TdpOp.SetDirtyLogging(0, true));
            int writers = 1 + rng.Next(2);
            for (int w = 0; w < writers; w++)
            {
                int t = (w + rng.Next(program.Count)) % program.Count;
                var ops = program[t].ToList();
                ops.Insert(rng.Next(ops.Count + 1), new TdpOp.AccessGpa(LoggedGfn << 12, AccessType.Write));
                if (rng.Next(4) == 0 && ops.Count < ConcurrentTdpCase.MaxOpsPerThread) ops.Add(new TdpOp.GetDirtyLog(0));
                program[t] = ops;
            }
        }
    }

    static TdpOp.CreateSlot SecondSlot() => new(1, BaseGfn: 0x400, Pages: 0x200, HostPfnBase: 0x200000, PageSize.Size4K, ReadOnly: false);

    static TdpOp NextOp(Random rng, bool second)
    {
        if (rng.Next(6) != 0)
        {
            ulong gfn = rng.Next(10) == 0 ? Gfns[rng.Next(Gfns.Length)] : Holes[rng.Next(Holes.Length)];
            int kind = rng.Next(10);
            return new TdpOp.AccessGpa(gfn << 12, kind < 5 ? AccessType.Write : kind < 9 ? AccessType.Read : AccessType.Fetch);
        }
        return rng.Next(20) switch
        {
            < 7 => new TdpOp.SetMaxPageSize(PageSize.Size2M),
            < 9 => new TdpOp.SetMaxPageSize(PageSize.Size4K),
            < 12 => new TdpOp.ZapRange(0, 0x200),
            < 14 => new TdpOp.ZapRange(0x1, 0x3),
            14 => new TdpOp.ZapAll(),
            < 18 => new TdpOp.SetDirtyLogging(0, rng.Next(2) == 0),
            _ => second ? new TdpOp.ZapRange(0x400, 0x600) : SecondSlot(),
        };
    }
}
