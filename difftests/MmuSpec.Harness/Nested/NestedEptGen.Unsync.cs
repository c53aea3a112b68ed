using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

internal sealed partial class NestedEptCaseBuilder
{
    /// <summary>Draw stale bursts too (the nested-ept-unsync property); off, the builder draws what it always drew.</summary>
    public bool StaleBursts { get; init; }

    /// <summary>
    /// A stale burst, what an unsync shadow EPT page lives on: L2 reads a 4 KiB page of the current EPT (the leaf made
    /// readable and accessed, the levels above now and then narrowed to read or read/write), L1 changes the leaf without
    /// INVEPT (execute only, which ANDs to nothing under read-only levels; not present; retargeted; widened), L2 uses it
    /// again (a stale answer is allowed), then an invalidation (INVEPT naming the current EPTP or the same tables with the
    /// other A/D bit, all-context, or a write that L1's entry may refuse: a violation) or none, and a last read.
    /// </summary>
    void StaleBurst()
    {
        var mine = paths.Where(p => p.Owner.Root == current.Root && p.LeafLevel == 1).ToList();
        if (mine.Count == 0)
        {
            BurstOnPath();
            return;
        }
        ulong gpa = mine[rng.Next(mine.Count)].Gpa;
        var path = PathEntries(current, gpa).ToList();
        if (path.Count != current.Levels || !entries.TryGetValue(path[^1], out var leaf))
        {
            BurstOnPath();
            return;
        }
        if (rng.Next(3) == 0)
        {
            ulong upper = path[rng.Next(path.Count - 1)];
            var (value, level) = entries[upper];
            Write(upper, (value & ~7UL) | (rng.Next(2) == 0 ? 1UL : 3UL), level);
        }
        ulong readable = (leaf.Value & ~7UL) | (rng.Next(2) == 0 ? 1UL : 7UL) | EptEntry.Accessed;
        Write(path[^1], readable, 1);
        Emit(new NestedEptOp.L2Access(gpa, AccessType.Read));
        ulong changed = rng.Next(5) switch
        {
            0 or 1 => (readable & ~7UL) | 4, // execute only
            2 => readable & ~7UL,            // not present
            3 => (readable & ~0xF_FFFF_FFFF_F000UL) | (Leaf(1) & 0xF_FFFF_FFFF_F000UL),
            _ => readable | 7,
        };
        Write(path[^1], changed, 1);
        Emit(new NestedEptOp.L2Access(gpa, rng.Next(3) == 0 ? AccessType.Fetch : AccessType.Read));
        switch (rng.Next(5))
        {
            case 0:
                Emit(new NestedEptOp.Invept(InveptType.SingleContext, current.Eptp));
                break;
            case 1:
                Emit(new NestedEptOp.Invept(InveptType.SingleContext, EptPointer.Create(current.Root, current.Levels, !current.AccessedDirty)));
                break;
            case 2:
                Emit(new NestedEptOp.Invept(InveptType.AllContext, default));
                break;
            case 3:
                Emit(new NestedEptOp.L2Access(gpa, AccessType.Write));
                break;
        }
        Emit(new NestedEptOp.L2Access(gpa, AccessType.Read));
    }
}
