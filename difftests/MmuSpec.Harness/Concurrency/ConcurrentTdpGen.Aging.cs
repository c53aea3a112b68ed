using System.Collections.Immutable;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

public static partial class ConcurrentTdpGen
{
    static readonly (ulong Start, ulong End)[] AgedRanges = [(0x1, 0x2), (0x1, 0x8), (0, 0x200), (0, 0x400)];

    /// <summary>
    /// In about a third of the cases the VM keeps EPT/stage-2 accessed state and one thread ages a range (or
    /// tests it) under the read side, entry by entry, while the others fault: hits set A by exchange, which a
    /// range walk's exchange (aging, or dirty logging's write-protection, which the first stream draws) then
    /// loses and re-reads. From a third stream of the seed, after the others, so their draws stay as they were.
    /// </summary>
    static VmConfig AddAging(Random rng, VmConfig config, ImmutableArray<TdpOp>.Builder setup, List<IReadOnlyList<TdpOp>> program)
    {
        if (rng.Next(3) != 0) return config;
        var (start, end) = AgedRanges[rng.Next(AgedRanges.Length)];
        int t = rng.Next(program.Count);
        var ops = program[t].ToList();
        if (ops.Count < ConcurrentTdpCase.MaxOpsPerThread)
            ops.Insert(rng.Next(ops.Count + 1), rng.Next(4) == 0 ? new TdpOp.TestAge(start, end) : new TdpOp.Age(start, end));
        if (rng.Next(2) == 0 && ops.Count < ConcurrentTdpCase.MaxOpsPerThread) ops.Insert(rng.Next(ops.Count + 1), new TdpOp.SetDirtyLogging(0, true));
        program[t] = ops;
        // A leaf read in by the setup (young, clean) that every other thread writes: the write hit sets D by exchange,
        // the exchange an age or a write-protection of that leaf races.
        setup.Add(new TdpOp.AccessGpa(AgedGfn << 12, AccessType.Read));
        for (int w = 0; w < program.Count; w++)
        {
            if (w == t) continue;
            var writes = program[w].ToList();
            if (writes.Count < ConcurrentTdpCase.MaxOpsPerThread) writes.Insert(rng.Next(writes.Count + 1), new TdpOp.AccessGpa(AgedGfn << 12, AccessType.Write));
            program[w] = writes;
        }
        return config.WithAccessedDirty(AccessedDirty.Enabled);
    }

    /// <summary>Gfn 0x1, in every aged range (the setup often faults it in already; then its read is a hit).</summary>
    const ulong AgedGfn = 0x1;
}
