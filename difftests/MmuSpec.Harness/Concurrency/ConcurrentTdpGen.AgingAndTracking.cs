using System.Collections.Immutable;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

public static partial class ConcurrentTdpGen
{
    const int ThirdStream = 0x3A6E;

    /// <summary>Gfn 0x409, in slot 1 (4 KiB host pages): its leaf is always 4 KiB, so logging leaves it read-only and MMU-writable.</summary>
    const ulong LoggedSmallGfn = 0x409;

    static readonly (ulong Start, ulong End)[] AgeRanges = [(0, 0x200), (0x1, 0x8), (0x200, 0x400), (0, 0x400)];

    /// <summary>
    /// A third stream of the case seed, drawn after everything else (the schedule seed included), so the ops and
    /// schedules the first two streams drew stay as they were. In a quarter of the cases the VM keeps
    /// accessed state (EPT A/D on, or off, where aging zaps) and one or two threads age or test-age a region; in
    /// another quarter one thread starts tracking writes to a gfn and later writes it, and another thread writes it
    /// too, now and then with the tracking dropped again. The tracked gfn is mostly one the setup faults in before
    /// dirty logging turns on (a read-only leaf that is still MMU-writable: the one the fast fault could make
    /// writable again, upstream 7c8a4742c4ab): 0x409 in slot 1 (always a 4 KiB leaf) when there is one, or 0x9
    /// (a 2 MiB leaf when the policy allows it, which the fast fault leaves alone); else a hole the threads fault.
    /// Aging and tracking are not drawn together: with accessed state kept writes never take the fast path.
    /// </summary>
    static VmConfig AddAgingAndWriteTracking(Random rng, VmConfig config, ImmutableArray<TdpOp>.Builder setup, List<IReadOnlyList<TdpOp>> program)
    {
        int kind = rng.Next(8);
        if (kind < 2)
        {
            var mode = rng.Next(3) == 0 ? AccessedDirty.Disabled : AccessedDirty.Enabled;
            int agers = 1 + rng.Next(2);
            for (int a = 0; a < agers; a++)
            {
                var (start, end) = AgeRanges[rng.Next(AgeRanges.Length)];
                TdpOp op = rng.Next(3) == 0 ? new TdpOp.TestAge(start, end) : new TdpOp.Age(start, end);
                Insert(rng, program, (a + rng.Next(program.Count)) % program.Count, op);
            }
            return new VmConfig(config.Format, config.SharedBit, mode);
        }
        if (kind < 4)
        {
            bool slot1 = setup.Any(op => op is TdpOp.CreateSlot { Id: 1 });
            ulong gfn = slot1 && rng.Next(2) == 0 ? LoggedSmallGfn : rng.Next(4) != 0 ? LoggedGfn : Holes[rng.Next(Holes.Length)];
            if (gfn == LoggedSmallGfn)
            {
                setup.Add(new TdpOp.AccessGpa(LoggedSmallGfn << 12, AccessType.Read));
                setup.Add(new TdpOp.SetDirtyLogging(1, true));
            }
            else if (gfn == LoggedGfn && !setup.Contains(new TdpOp.AccessGpa(LoggedGfn << 12, AccessType.Read)))
            {
                setup.Add(new TdpOp.AccessGpa(LoggedGfn << 12, AccessType.Read));
                if (!setup.Any(op => op is TdpOp.SetDirtyLogging)) setup.Add(new TdpOp.SetDirtyLogging(0, true));
            }
            // The tracker: Track, then (later in its own thread) a write, which must exit; sometimes Untrack at the end.
            int t = rng.Next(program.Count);
            var ops = program[t].ToList();
            if (ops.Count + 2 <= ConcurrentTdpCase.MaxOpsPerThread)
            {
                int at = rng.Next(ops.Count + 1);
                ops.Insert(at, new TdpOp.TrackWrites(gfn));
                ops.Insert(at + 1 + rng.Next(ops.Count - at), new TdpOp.AccessGpa(gfn << 12, AccessType.Write));
                if (rng.Next(4) == 0 && ops.Count < ConcurrentTdpCase.MaxOpsPerThread) ops.Add(new TdpOp.UntrackWrites(gfn));
                program[t] = ops;
            }
            // Another writer races the tracking.
            Insert(rng, program, (t + 1) % program.Count, new TdpOp.AccessGpa(gfn << 12, AccessType.Write));
        }
        return config;
    }

    static void Insert(Random rng, List<IReadOnlyList<TdpOp>> program, int thread, TdpOp op)
    {
        var ops = program[thread].ToList();
        if (ops.Count >= ConcurrentTdpCase.MaxOpsPerThread) return;
        ops.Insert(rng.Next(ops.Count + 1), op);
        program[thread] = ops;
    }
}
