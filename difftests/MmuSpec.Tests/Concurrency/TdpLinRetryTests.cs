using MmuSpec.Harness.Concurrency;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// What a Retry may leave behind (<see cref="TdpState.WriteFaultZapsHugeLeaf"/>). The history is the one the campaign found
/// (`check --property tdp-concurrent --seed 7`, shrunk to two ops): a 2 MiB read-only leaf in a logging slot; T0's
/// write zaps it to map 4 KiB below, T1's read meanwhile faults a 4 KiB leaf into the hole, T0's link loses and
/// answers Retry. Before the spec allowed that Retry its zap, no order explained T1's "faulted in".
/// </summary>
public sealed class TdpLinRetryTests
{
    static readonly VmConfig Config = new(TdpFormat.Ept);

    static TdpState Setup()
    {
        var s = TdpState.Create(Config);
        foreach (var op in new TdpOp[]
        {
            new TdpOp.CreateSlot(0, BaseGfn: 0, Pages: 0x400, HostPfnBase: 0x100000, PageSize.Size2M, ReadOnly: false),
            new TdpOp.SetMaxPageSize(PageSize.Size2M),
            new TdpOp.AccessGpa(0x9000, AccessType.Read),
            new TdpOp.SetDirtyLogging(0, On: true),
        })
            s = s.Step(op).State;
        return s;
    }

    static readonly TdpOp Write2 = new TdpOp.AccessGpa(0x2000, AccessType.Write), Read7 = new TdpOp.AccessGpa(0x7000, AccessType.Read);

    static History<TdpOp, TdpLinResult> Overlapping(TdpLinResult write, TdpLinResult read)
    {
        var r = new HistoryRecorder<TdpOp, TdpLinResult>();
        int readId = r.Invoke(1, Read7);
        int writeId = r.Invoke(0, Write2);
        r.Respond(writeId, write);
        r.Respond(readId, read);
        return r.ToHistory();
    }

    [Fact]
    public void A_write_that_zapped_a_huge_leaf_and_lost_its_link_may_answer_Retry_with_the_leaf_gone()
    {
        var setup = Setup();
        var spec = new TdpLinSpec(setup);
        var afterRead = setup.ZapLeaves(0, 0x200).Step(Read7);
        var faulted = new TdpLinResult(afterRead.Result);
        Assert.Equal(new TdpResult.Mapped(0x100007000, PageSize.Size4K, Faulted: true), afterRead.Result);

        var verdict = Linearizability.Check(Overlapping(TdpLinResult.Retry, faulted), spec, new TdpLinState(afterRead.State));
        Assert.True(verdict.IsLinearizable, verdict.Explanation);
    }

    [Fact]
    public void A_Retry_still_leaves_everything_else_as_it_was()
    {
        var setup = Setup();
        var spec = new TdpLinSpec(setup);
        // A Retry of a read (no zap on that path), then the other read faulting 4 KiB: nothing explains the hole.
        var afterRead = setup.ZapLeaves(0, 0x200).Step(Read7);
        var r = new HistoryRecorder<TdpOp, TdpLinResult>();
        int readId = r.Invoke(1, Read7);
        int otherId = r.Invoke(0, new TdpOp.AccessGpa(0x2000, AccessType.Read));
        r.Respond(otherId, TdpLinResult.Retry);
        r.Respond(readId, new TdpLinResult(afterRead.Result));
        Assert.False(Linearizability.Check(r.ToHistory(), spec, new TdpLinState(afterRead.State)).IsLinearizable);
        // Nor may a write's Retry drop a huge leaf its own step keeps: logging off, the read-only 2 MiB leaf is made writable.
        var notLogging = setup.Step(new TdpOp.SetDirtyLogging(0, false)).State;
        Assert.Null(notLogging.WriteFaultZapsHugeLeaf(0x2000));
        Assert.NotNull(setup.WriteFaultZapsHugeLeaf(0x2000));
    }

    /// <summary>
    /// The campaign's history (catalog run of session 13, baseline replay): T1's test_age ran while T0's write fault
    /// had dropped the young 2 MiB leaf and not yet mapped 4 KiB below it, and answered "old". Only the fault's drop
    /// as a step of its own explains it; with no write in flight nothing does.
    /// </summary>
    [Fact]
    public void A_test_age_inside_a_write_faults_drop_and_map_may_find_no_young_leaf()
    {
        var s = TdpState.Create(new VmConfig(TdpFormat.Ept, null, AccessedDirty.Enabled));
        foreach (var op in new TdpOp[]
        {
            new TdpOp.CreateSlot(0, BaseGfn: 0, Pages: 0x400, HostPfnBase: 0x100000, PageSize.Size2M, ReadOnly: false),
            new TdpOp.SetMaxPageSize(PageSize.Size2M),
            new TdpOp.AccessGpa(0x9000, AccessType.Read),
            new TdpOp.SetDirtyLogging(0, On: true),
        })
            s = s.Step(op).State;
        var write = new TdpOp.AccessGpa(0x9000, AccessType.Write);
        var testAge = new TdpOp.TestAge(0, 0x200);
        var old = new TdpLinResult(new TdpResult.Young(false));
        Assert.Equal(new TdpResult.Young(true), s.Step(testAge).Result);
        var afterWrite = s.Step(write);

        var r = new HistoryRecorder<TdpOp, TdpLinResult>();
        int w = r.Invoke(0, write);
        int t = r.Invoke(1, testAge);
        r.Respond(t, old);
        r.Respond(w, new TdpLinResult(afterWrite.Result));
        var verdict = Linearizability.Check(r.ToHistory(), new TdpLinSpec(s), new TdpLinState(afterWrite.State));
        Assert.True(verdict.IsLinearizable, verdict.Explanation);

        var alone = new HistoryRecorder<TdpOp, TdpLinResult>();
        alone.Respond(alone.Invoke(1, testAge), old);
        Assert.False(Linearizability.Check(alone.ToHistory(), new TdpLinSpec(s), new TdpLinState(s)).IsLinearizable);
    }
}
