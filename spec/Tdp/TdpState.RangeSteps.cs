using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>What a range walk does to each leaf it reaches (docs/tdp-model.md, "Range operations as steps").</summary>
public enum RangeWalkKind
{
    /// <summary>kvm_tdp_mmu_zap_leafs: the leaf goes.</summary>
    Zap,

    /// <summary>wrprot_gfn_range (dirty logging being enabled): the leaf loses W.</summary>
    WriteProtect,

    /// <summary>kvm_tdp_mmu_age_gfn_range: a young leaf becomes old (zapped without EPT A/D); the walk reports whether one was young.</summary>
    Age,

    /// <summary>kvm_tdp_mmu_test_age_gfn: reports whether a leaf is young; the first young leaf ends the walk.</summary>
    TestAge,

    /// <summary>kvm_tdp_mmu_zap_collapsible_sptes (dirty logging turned off): links a huge leaf could replace go (TdpState.Collapsible.cs).</summary>
    Collapse,
}

/// <summary>
/// A range operation part way through: which root it walks (the direct root, then the mirror root when the
/// VM has one), the gfn it has reached (<paramref name="Cursor"/>; everything below it in this root is done)
/// and whether it has met a young leaf so far. Immutable, equal by value.
/// </summary>
public sealed record RangeWalk(RangeWalkKind Kind, ulong Start, ulong End, bool Mirror, ulong Cursor, bool Young)
{
    /// <summary>Every root is walked to the end of the range.</summary>
    public bool IsDone { get; init; }

    public override string ToString() =>
        IsDone ? $"{Kind} [{Bits.Hex(Start)}, {Bits.Hex(End)}) done{(Young ? ", young" : "")}"
        : $"{Kind} [{Bits.Hex(Start)}, {Bits.Hex(End)}) at {(Mirror ? "mirror" : "direct")} gfn {Bits.Hex(Cursor)}{(Young ? ", young so far" : "")}";
}

/// <summary>
/// Range operations as runs of per-entry steps (docs/tdp-model.md, "Range operations as steps"). KVM walks a
/// range with tdp_iter: one root after another, in gfn order, looking at one entry at a time; under
/// mmu_lock held for read each leaf is changed by its own compare-and-exchange, and a long walk may drop
/// the lock and restart from the root at the gfn it reached (tdp_mmu_iter_cond_resched). So other
/// operations may run between two entries of one walk. Here a walk is a sequence of atomic steps, each on
/// one leaf or over one hole, in gfn order: a step may be taken again after a restart, but no gfn of the
/// range is ever passed without a step that saw it. Run back to back with nothing between, the steps give
/// what the atomic operation gives (<c>TdpRangeStepTests</c>).
/// </summary>
public sealed partial record TdpState
{
    /// <summary>
    /// The walk that runs <paramref name="op"/>, and the state after its first, non-walk part (dirty logging's
    /// flag); null when the op is not a range walk here (it is one atomic <see cref="Step"/>), including when
    /// <see cref="Step"/> rejects it or it changes no leaf by rule (logging already as asked).
    /// </summary>
    public (TdpState State, RangeWalk Walk)? BeginWalk(TdpOp op)
    {
        if (SlotUpdateWaits(op) is not null) return null;
        switch (op)
        {
            case TdpOp.ZapRange z when z.StartGfn < z.EndGfn && z.EndGfn <= Config.GfnLimit:
                return (this, NewWalk(RangeWalkKind.Zap, z.StartGfn, z.EndGfn));
            case TdpOp.Age a when AgingProblem(a.StartGfn, a.EndGfn) is null:
                return (this, NewWalk(RangeWalkKind.Age, a.StartGfn, a.EndGfn));
            case TdpOp.TestAge t when AgingProblem(t.StartGfn, t.EndGfn) is null:
                return (this, NewWalk(RangeWalkKind.TestAge, t.StartGfn, t.EndGfn));
            // kvm_mmu_slot_apply_flags: the slot logs first, then its leaves are write-protected (under
            // mmu_lock held for read: kvm_tdp_mmu_wrprot_slot). A fault between the two sees a logging slot.
            case TdpOp.SetDirtyLogging { On: true } d when Slots.TryGetValue(d.Id, out var s) && !s.DirtyLogging:
                return (With(Memslots.SetDirtyLogging(s, true)), NewWalk(RangeWalkKind.WriteProtect, s.BaseGfn, s.EndGfn));
            // Turned off: the slot stops logging, then the collapsible zap walks it under the read side.
            case TdpOp.SetDirtyLogging { On: false } d when Slots.TryGetValue(d.Id, out var s) && s.DirtyLogging:
                return (With(Memslots.SetDirtyLogging(s, false)), NewWalk(RangeWalkKind.Collapse, s.BaseGfn, s.EndGfn));
            default:
                return null;
        }
    }

    /// <summary>What the operation returns once its walk is done: whether a leaf was young (aging), or ok.</summary>
    public static VmResult WalkResult(RangeWalk walk) =>
        walk.Kind is RangeWalkKind.Age or RangeWalkKind.TestAge ? new TdpResult.Young(walk.Young) : VmResult.Ok.Instance;

    RangeWalk NewWalk(RangeWalkKind kind, ulong start, ulong end) => new(kind, start, end, Mirror: false, Cursor: start, Young: false);

    /// <summary>
    /// One atomic step of <paramref name="walk"/>, each way it may go. At the cursor:
    /// <list type="bullet">
    /// <item>a leaf of this root covers it: the kind's rule (<see cref="ApplyWalkRule"/>) on that one leaf,
    /// and the cursor moves to the leaf's end (a huge leaf that begins below the range is still the range's);</item>
    /// <item>none does: the walk read a hole, a non-present entry at some level, and moves to that entry's end,
    /// which must hold no leaf: one way for each level whose aligned block holds none from the cursor on
    /// (the walk's tables are not the spec's to know, so any level the hole allows).</item>
    /// </list>
    /// At the range's end the walk goes on to the mirror root from the start, or is done.
    /// </summary>
    public IEnumerable<(TdpState State, RangeWalk Walk)> StepWalk(RangeWalk walk)
    {
        if (walk.IsDone) throw new ArgumentException("the walk is done", nameof(walk));
        if (walk.Kind == RangeWalkKind.Collapse)
        {
            foreach (var step in StepCollapsible(walk, stops: null)) yield return step;
            yield break;
        }
        ulong at = walk.Cursor;
        var ahead = Leaves().Where(l => l.Page.Role.Mirror == walk.Mirror && l.Leaf.Overlaps(at, walk.End)).ToList();
        if (ahead.FirstOrDefault(l => l.Leaf.Covers(at)) is { Leaf: not null } hit)
        {
            var (state, young) = ApplyWalkRule(walk.Kind, hit.Page, hit.Index, hit.Leaf);
            var next = walk with { Cursor = hit.Leaf.Gfn + hit.Leaf.Frames, Young = walk.Young || young };
            // kvm_tdp_mmu_test_age_gfn answers at the first young leaf.
            yield return (state, walk.Kind == RangeWalkKind.TestAge && young ? next with { IsDone = true } : Moved(next));
            yield break;
        }
        ulong nextLeaf = ahead.Count == 0 ? walk.End : Math.Max(at, ahead.Min(l => l.Leaf.Gfn));
        var ends = new SortedSet<ulong>();
        for (int level = 1; level <= Config.RootLevel; level++)
        {
            ulong frames = 1UL << (9 * (level - 1));
            ulong end = Math.Min((at & ~(frames - 1)) + frames, walk.End);
            if (end <= nextLeaf) ends.Add(end);
        }
        foreach (ulong end in ends.Reverse())        // the farthest first: the fewest steps
            yield return (this, Moved(walk with { Cursor = end }));
    }

    /// <summary>
    /// <see cref="StepWalk"/> with a run of hole steps taken as one, stopping only at <paramref name="stops"/> (gfns
    /// where another operation may put a leaf's start or end) and at the hole's end. Where the cursor lies between
    /// two stops changes nothing any later step does (a leaf put there either covers the cursor or lies wholly on
    /// one side of it), so a checker that knows every gfn the other operations touch loses no history this way,
    /// and sees a few cursor positions instead of one per gfn.
    /// </summary>
    public IEnumerable<(TdpState State, RangeWalk Walk)> StepWalk(RangeWalk walk, IReadOnlySet<ulong> stops)
    {
        if (walk.Kind == RangeWalkKind.Collapse)
        {
            foreach (var step in StepCollapsible(walk, stops)) yield return step;
            yield break;
        }
        ulong at = walk.Cursor;
        var ahead = Leaves().Where(l => l.Page.Role.Mirror == walk.Mirror && l.Leaf.Overlaps(at, walk.End)).ToList();
        if (ahead.Any(l => l.Leaf.Covers(at)))
        {
            foreach (var step in StepWalk(walk)) yield return step;
            yield break;
        }
        ulong holeEnd = ahead.Count == 0 ? walk.End : ahead.Min(l => l.Leaf.Gfn);
        yield return (this, Moved(walk with { Cursor = holeEnd }));
        foreach (ulong stop in stops.Where(g => g > at && g < holeEnd).OrderDescending())
            yield return (this, walk with { Cursor = stop });
    }

    /// <summary>The gfns where a leaf a fault at <paramref name="gfn"/> installs may begin or end (4 KiB to 1 GiB).</summary>
    public static IEnumerable<ulong> LeafBoundaries(ulong gfn)
    {
        for (int level = 1; level <= 3; level++)
        {
            ulong frames = 1UL << (9 * (level - 1));
            yield return gfn & ~(frames - 1);
            yield return (gfn & ~(frames - 1)) + frames;
        }
    }

    /// <summary>Past the range's end: the next root from the start, or done.</summary>
    RangeWalk Moved(RangeWalk walk) =>
        walk.Cursor < walk.End ? walk
        : !walk.Mirror && Config.SharedBit is not null ? walk with { Mirror = true, Cursor = walk.Start }
        : walk with { IsDone = true };

    /// <summary>
    /// What a walk of <paramref name="kind"/> does to one leaf it reaches, and whether the leaf was young. The
    /// one place each rule lives: the atomic operations (<see cref="ZapLeaves"/>, <see cref="WriteProtect"/>,
    /// Age, TestAge) apply the same rule to every leaf at once.
    /// </summary>
    TdpState ApplyWalkRule(RangeWalkKind kind, PageKey page, int index, Spte.Leaf leaf, out bool young)
    {
        young = false;
        switch (kind)
        {
            case RangeWalkKind.Zap:
                // A present leaf goes; its table stays (tdp_mmu_zap_leafs).
                return RemoveEntry(page, index);
            case RangeWalkKind.WriteProtect:
                // Only W goes: the leaf keeps its frame, and the next write faults and is logged.
                return leaf.Writable ? SetEntry(page, index, leaf.WithWritable(false)) : this;
            case RangeWalkKind.Age:
                young = leaf.Accessed;
                if (!young) return this;
                return AgingZaps ? RemoveEntry(page, index) : SetEntry(page, index, leaf with { Accessed = false });
            default:
                young = leaf.Accessed;
                return this;
        }
    }

    (TdpState State, bool Young) ApplyWalkRule(RangeWalkKind kind, PageKey page, int index, Spte.Leaf leaf)
    {
        var state = ApplyWalkRule(kind, page, index, leaf, out bool young);
        return (state, young);
    }

    /// <summary>
    /// <paramref name="op"/> as its walk, every step taken at once with nothing between (the farthest hole step
    /// each time): what <see cref="Step"/> gives for a range operation, which the tests check.
    /// </summary>
    public TdpStepped StepAsWalk(TdpOp op)
    {
        if (BeginWalk(op) is not var (state, walk)) return Step(op);
        while (!walk.IsDone) (state, walk) = state.StepWalk(walk).First();
        return new TdpStepped(state, WalkResult(walk));
    }
}
