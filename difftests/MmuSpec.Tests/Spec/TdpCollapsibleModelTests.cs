using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using static MmuSpec.Tests.TdpSteps;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Dirty logging turned off zaps the collapsible links (TdpState.Collapsible.cs, docs/tdp-model.md "Dirty logging
/// turned off"; KVM's kvm_tdp_mmu_zap_collapsible_sptes): which links go, which stay and why, what the next fault
/// maps, and the zap as a walk of steps equal to the atomic op.
/// </summary>
public sealed class TdpCollapsibleModelTests
{
    static readonly TdpOp On = new TdpOp.SetDirtyLogging(0, true), Off = new TdpOp.SetDirtyLogging(0, false);

    /// <summary>A slot of 2 MiB host pages over gfns [0x200, 0x800) logging, with 4 KiB leaves in its first two 2 MiB ranges.</summary>
    static TdpState Logged(ulong pages = 0x600, PageSize host = PageSize.Size2M, VmConfig? config = null) =>
        Run(TdpState.Create(config ?? new VmConfig(TdpFormat.Ept)), new TdpOp.CreateSlot(0, 0x200, pages, 0x1200, host, ReadOnly: false),
            On, Read(0x201), Write(0x205), Read(0x400));

    static int[] LinkLevels(TdpState s) => [.. s.Links().Select(l => l.Link.Child.Role.Level + 1).Order()];

    [Fact]
    public void Logging_off_drops_the_2M_links_and_the_next_fault_maps_2M()
    {
        var s = Logged();
        Assert.Equal([2, 2, 3, 4], LinkLevels(s));
        var off = s.Step(Off).State;
        Assert.Equal([3, 4], LinkLevels(off));                       // the 1 GiB range holds gfns outside the slot
        Assert.Empty(off.Leaves());
        var hit = Assert.IsType<TdpResult.Mapped>(off.Step(Read(0x201)).Result);
        Assert.Equal(PageSize.Size2M, hit.Size);
        // Before this rule the 4 KiB leaf stayed and served the read.
        var kept = Assert.IsType<TdpResult.Mapped>(s.Step(Read(0x201)).Result);
        Assert.Equal(PageSize.Size4K, kept.Size);
    }

    [Fact]
    public void Links_no_fault_could_map_huge_stay()
    {
        // A 2 MiB range the slot does not cover whole (its end at 0x4ff).
        Assert.Contains(2, LinkLevels(Logged(pages: 0x2ff).Step(Off).State));
        // 4 KiB host pages.
        Assert.Equal([2, 2, 3, 4], LinkLevels(Logged(host: PageSize.Size4K).Step(Off).State));
        // The policy allows 4 KiB only.
        Assert.Equal([2, 2, 3, 4], LinkLevels(Run(Logged(), new TdpOp.SetMaxPageSize(PageSize.Size4K), Off)));
        // A write-tracked gfn in the first range keeps its link; the second goes.
        var tracked = Run(Logged(), new TdpOp.TrackWrites(0x2ff), Off);
        Assert.Equal([0x200UL], tracked.Links().Where(l => l.Link.Child.Role.Level == 1).Select(l => l.Link.Child.Gfn));
        // A host page moved inside the second range (its host pages not settled) keeps its link.
        var moving = Run(Logged(), new TdpOp.HostInvalidateStart(0x400, 0x401), new TdpOp.HostInvalidateEnd(0x400, 0x401), Off);
        Assert.Equal([0x400UL], moving.Links().Where(l => l.Link.Child.Role.Level == 1).Select(l => l.Link.Child.Gfn));
        // Logging off on a slot that does not log changes nothing.
        var notLogging = Run(Logged(), Off);
        Assert.Equal(notLogging, notLogging.Step(Off).State);
    }

    [Fact]
    public void A_1G_link_goes_whole_with_the_2M_links_below_it()
    {
        var s = Run(TdpState.Create(new VmConfig(TdpFormat.Ept)), new TdpOp.CreateSlot(0, 0x40000, 0x40000, 0x80000, PageSize.Size1G, ReadOnly: false),
            On, Read(0x40001), Read(0x40400), Off);
        Assert.Equal([4], LinkLevels(s));
        Assert.Equal(PageSize.Size1G, Assert.IsType<TdpResult.Mapped>(s.Step(Read(0x40001)).Result).Size);
    }

    [Fact]
    public void The_zap_flushes_each_dropped_link_s_range()
    {
        var s = Logged();
        var must = TdpTlb.MustFlush(s, s.Step(Off).State);
        Assert.Equal(GfnRanges.Of(new GfnRange(0x200, 0x600)), must.Gfns);
    }

    [Fact]
    public void Steps_back_to_back_equal_the_atomic_zap_in_generated_states()
    {
        int compared = 0, zapped = 0;
        foreach (var config in new VmConfig[] { new(TdpFormat.Ept), new(TdpFormat.Stage2), new(TdpFormat.Ept, 47), new(TdpFormat.Ept, 51) })
            for (int seed = 0; seed < 30; seed++)
            {
                var c = TdpGen.Build(seed, 20, config);
                var rng = new Random(seed);
                var s = TdpState.Create(c.Config);
                foreach (var op in c.Ops)
                {
                    s = s.Step(op).State;
                    foreach (var slot in s.Slots.Values)
                    {
                        var logging = slot.DirtyLogging ? s : s.Step(new TdpOp.SetDirtyLogging(slot.Id, true)).State;
                        var off = new TdpOp.SetDirtyLogging(slot.Id, false);
                        var atomic = logging.Step(off);
                        Assert.Equal(atomic, logging.StepAsWalk(off));
                        var stops = c.Ops.OfType<TdpOp.AccessGpa>().SelectMany(a => TdpState.LeafBoundaries((a.Gpa >> 12) & ~config.DirectBits)).ToHashSet();
                        foreach (var holeStops in new[] { null, stops })
                        {
                            var (state, walk) = logging.BeginWalk(off)!.Value;
                            var flushed = TdpTlb.MustFlush(logging, state).Gfns;
                            while (!walk.IsDone)
                            {
                                var ways = (holeStops is null ? state.StepWalk(walk) : state.StepWalk(walk, holeStops)).ToList();
                                Assert.NotEmpty(ways);
                                var (next, nextWalk) = ways[rng.Next(ways.Count)];
                                Assert.True(nextWalk.IsDone || nextWalk.Mirror != walk.Mirror || nextWalk.Cursor > walk.Cursor, $"{walk} made no progress");
                                flushed = flushed.Union(TdpTlb.MustFlush(state, next).Gfns);
                                (state, walk) = (next, nextWalk);
                            }
                            Assert.Equal(atomic.State, state);
                            Assert.Equal(atomic.Result, TdpState.WalkResult(walk));
                            Assert.Equal(TdpTlb.MustFlush(logging, atomic.State).Gfns, flushed);
                        }
                        compared++;
                        if (atomic.State.Pages.Count < logging.Pages.Count) zapped++;
                    }
                }
            }
        Assert.True(compared > 500 && zapped > 50, $"{compared} compared, {zapped} zapped links");
    }

    [Fact]
    public void A_fault_before_the_walk_reaches_a_link_hits_the_4K_leaf_under_it()
    {
        // What only the steps explain: logging is off, yet a read hits a 4 KiB leaf the walk has not zapped yet.
        var s = Logged();
        var (state, walk) = s.BeginWalk(Off)!.Value;
        Assert.False(state.Slots[0].DirtyLogging);
        var early = Assert.IsType<TdpResult.Mapped>(state.Step(Read(0x400)).Result);
        Assert.Equal(PageSize.Size4K, early.Size);
        Assert.False(early.Faulted);
        while (!walk.IsDone) (state, walk) = state.StepWalk(walk).First();
        Assert.Equal(PageSize.Size2M, Assert.IsType<TdpResult.Mapped>(state.Step(Read(0x400)).Result).Size);
    }
}
