using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using static MmuSpec.Tests.TdpSteps;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Range operations as runs of per-entry steps (TdpState.RangeSteps.cs, docs/tdp-model.md "Range operations
/// as steps"): run back to back, along any of the ways a hole step may go, the steps give the atomic
/// operation's state, result and flush obligation; and a step between two others sees what a concurrent
/// walk would.
/// </summary>
public sealed class TdpRangeStepTests
{
    static readonly VmConfig[] Configs =
    [
        new(TdpFormat.Ept), new(TdpFormat.Stage2), new(TdpFormat.Ept, 47),
        new(TdpFormat.Ept, accessedDirty: AccessedDirty.Enabled), new(TdpFormat.Ept, accessedDirty: AccessedDirty.Disabled),
        new(TdpFormat.Stage2, 47, AccessedDirty.Disabled),
    ];

    /// <summary>Range ops to try in a state: every zap and aging op of the case, and over each slot and around it.</summary>
    static IEnumerable<TdpOp> RangeOps(TdpState s, IEnumerable<TdpOp> caseOps)
    {
        foreach (var op in caseOps)
            if (op is TdpOp.ZapRange or TdpOp.Age or TdpOp.TestAge) yield return op;
        foreach (var slot in s.Slots.Values)
        {
            yield return new TdpOp.SetDirtyLogging(slot.Id, true);
            yield return new TdpOp.ZapRange(slot.BaseGfn, slot.EndGfn);
            yield return new TdpOp.ZapRange(slot.BaseGfn + 1, slot.BaseGfn + 0x203);
            if (s.Config.AccessedDirty == AccessedDirty.Untracked) continue;
            yield return new TdpOp.Age(slot.BaseGfn, slot.EndGfn);
            yield return new TdpOp.Age(slot.BaseGfn + 3, slot.BaseGfn + 0x201);
            yield return new TdpOp.TestAge(slot.BaseGfn, slot.EndGfn);
        }
    }

    /// <summary>The walk run to its end, each hole step chosen by <paramref name="rng"/>, with each step's flush obligation.</summary>
    static (TdpStepped Stepped, GfnRanges Flushed, int Steps) RunWalk(TdpState s, TdpOp op, Random rng, IReadOnlySet<ulong>? stops = null)
    {
        var (state, walk) = s.BeginWalk(op)!.Value;
        var flushed = TdpTlb.MustFlush(s, state).Gfns;
        int steps = 0;
        while (!walk.IsDone)
        {
            var ways = (stops is null ? state.StepWalk(walk) : state.StepWalk(walk, stops)).ToList();
            Assert.NotEmpty(ways);
            var (next, nextWalk) = ways[rng.Next(ways.Count)];
            Assert.True(nextWalk.IsDone || nextWalk.Mirror != walk.Mirror || nextWalk.Cursor > walk.Cursor, $"{walk} made no progress");
            flushed = flushed.Union(TdpTlb.MustFlush(state, next).Gfns);
            (state, walk) = (next, nextWalk);
            steps++;
        }
        return (new TdpStepped(state, TdpState.WalkResult(walk)), flushed, steps);
    }

    [Fact]
    public void Steps_back_to_back_equal_the_atomic_operation_in_generated_states()
    {
        int compared = 0, walked = 0;
        foreach (var config in Configs)
            for (int seed = 0; seed < 40; seed++)
            {
                var c = TdpGen.Build(seed, 20, config);
                var rng = new Random(seed);
                var s = TdpState.Create(c.Config);
                foreach (var op in c.Ops)
                {
                    foreach (var range in RangeOps(s, c.Ops))
                    {
                        var atomic = s.Step(range);
                        Assert.Equal(atomic, s.StepAsWalk(range));
                        if (s.BeginWalk(range) is null) continue;
                        var (stepped, flushed, steps) = RunWalk(s, range, rng);
                        Assert.Equal(atomic.Result, stepped.Result);
                        Assert.Equal(atomic.State, stepped.State);
                        Assert.Equal(TdpTlb.MustFlush(s, atomic.State).Gfns, flushed);
                        // Hole steps taken together up to the case's access boundaries: the same again.
                        var stops = c.Ops.OfType<TdpOp.AccessGpa>().SelectMany(a => TdpState.LeafBoundaries(a.Gpa >> 12)).ToHashSet();
                        var (coalesced, _, _) = RunWalk(s, range, rng, stops);
                        Assert.Equal(atomic, coalesced);
                        compared++;
                        walked += steps;
                    }
                    s = s.Step(op).State;
                }
            }
        Assert.True(compared > 2000 && walked > 10 * compared / 2, $"{compared} ops compared, {walked} steps");
    }

    static readonly TdpOp Slot = new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1000, PageSize.Size4K, ReadOnly: false);

    static TdpState Vm(AccessedDirty ad, params TdpOp[] ops) => Run(TdpState.Create(new VmConfig(TdpFormat.Ept, accessedDirty: ad)), ops.Prepend(Slot));

    [Fact]
    public void A_fault_behind_the_zap_cursor_stays_and_one_ahead_is_zapped()
    {
        // The history no atomic zap explains: gfn 0x201 faulted behind the cursor, 0x205 ahead of it.
        var s = Vm(AccessedDirty.Untracked, Read(0x203));
        var (state, walk) = s.BeginWalk(new TdpOp.ZapRange(0x200, 0x208))!.Value;
        while (walk.Cursor <= 0x203) (state, walk) = state.StepWalk(walk).Last();     // hole by hole, then 0x203's leaf
        Assert.Equal(0x204UL, walk.Cursor);
        state = state.Step(Read(0x201)).State.Step(Read(0x205)).State;
        while (!walk.IsDone) (state, walk) = state.StepWalk(walk).First();
        Assert.Equal([0x201UL], state.Leaves().Select(l => l.Leaf.Gfn));
    }

    [Fact]
    public void A_write_between_logging_and_its_write_protection_ends_read_only_and_dirty()
    {
        // KVM's benign extra dirty bit: the slot logs, a write fault fixes a read-only leaf and logs it,
        // then the write-protection walk reaches the leaf.
        var s = Vm(AccessedDirty.Untracked, Read(0x203), new TdpOp.SetDirtyLogging(0, true), new TdpOp.GetDirtyLog(0),
            new TdpOp.SetDirtyLogging(0, false));
        Assert.False(s.Leaves().Single().Leaf.Writable);
        var (state, walk) = s.BeginWalk(new TdpOp.SetDirtyLogging(0, true))!.Value;
        Assert.True(state.Slots[0].DirtyLogging);
        state = state.Step(Write(0x203)).State;
        Assert.True(state.Leaves().Single().Leaf.Writable);
        while (!walk.IsDone) (state, walk) = state.StepWalk(walk).First();
        Assert.False(state.Leaves().Single().Leaf.Writable);
        Assert.Equal([0x3UL], state.DirtyBitmaps[0]);
        // Atomically, the write comes after the whole operation and the leaf stays writable.
        var atomic = s.Step(new TdpOp.SetDirtyLogging(0, true)).State.Step(Write(0x203)).State;
        Assert.True(atomic.Leaves().Single().Leaf.Writable);
    }

    [Fact]
    public void An_age_sees_an_early_leaf_old_and_a_later_one_young()
    {
        var s = Vm(AccessedDirty.Enabled, Read(0x201), Read(0x205), new TdpOp.Age(0x200, 0x600));
        var (state, walk) = s.BeginWalk(new TdpOp.Age(0x200, 0x600))!.Value;
        while (walk.Cursor < 0x203) (state, walk) = state.StepWalk(walk).First();
        state = state.Step(Read(0x201)).State.Step(Read(0x205)).State;   // both young again, 0x201 behind the cursor
        while (!walk.IsDone) (state, walk) = state.StepWalk(walk).First();
        Assert.Equal(new TdpResult.Young(true), TdpState.WalkResult(walk));
        Assert.Equal([(0x201UL, true), (0x205UL, false)], state.Leaves().Select(l => (l.Leaf.Gfn, l.Leaf.Accessed)).OrderBy(x => x.Gfn));
    }

    [Fact]
    public void A_hole_step_goes_no_farther_than_the_hole_and_a_huge_leaf_below_the_range_is_the_ranges()
    {
        var s = Vm(AccessedDirty.Untracked, Read(0x207));
        var walk = s.BeginWalk(new TdpOp.ZapRange(0x201, 0x400))!.Value.Walk;
        // From 0x201 a hole step reads one entry: a 4 KiB one (to 0x202); a 2 MiB one would reach past the leaf at 0x207.
        Assert.Equal([0x202UL], s.StepWalk(walk).Select(w => w.Walk.Cursor));
        var big = TdpState.Create(new VmConfig(TdpFormat.Ept)).Step(new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1000, PageSize.Size2M, false)).State
            .Step(Read(0x300)).State;
        Assert.Equal(2, big.Leaves().Single().Leaf.Level);
        var (after, w2) = big.StepWalk(big.BeginWalk(new TdpOp.ZapRange(0x3F0, 0x500))!.Value.Walk).Single();
        Assert.Empty(after.Leaves());
        Assert.Equal(0x400UL, w2.Cursor);
    }

    [Fact]
    public void TestAge_ends_at_the_first_young_leaf()
    {
        var s = Vm(AccessedDirty.Enabled, Read(0x201), Read(0x205));
        var (state, walk) = s.BeginWalk(new TdpOp.TestAge(0x200, 0x600))!.Value;
        int steps = 0;
        while (!walk.IsDone) { (state, walk) = state.StepWalk(walk).First(); steps++; }
        Assert.Equal(2, steps);                    // the hole [0x200, 0x201), then 0x201's leaf
        Assert.True(walk.Young);
        Assert.Same(s, state);
    }

    [Fact]
    public void Ops_that_are_not_walks_and_rejected_ones_have_none()
    {
        var s = Vm(AccessedDirty.Untracked, Read(0x203));
        Assert.Null(s.BeginWalk(new TdpOp.ZapRange(5, 5)));
        Assert.Null(s.BeginWalk(new TdpOp.Age(0x200, 0x300)));         // untracked: rejected
        Assert.Null(s.BeginWalk(new TdpOp.SetDirtyLogging(0, false)));
        Assert.Null(s.BeginWalk(new TdpOp.SetDirtyLogging(7, true)));
        Assert.Null(s.BeginWalk(Read(0x203)));
        var logging = s.Step(new TdpOp.SetDirtyLogging(0, true)).State;
        Assert.Null(logging.BeginWalk(new TdpOp.SetDirtyLogging(0, true)));
    }
}
