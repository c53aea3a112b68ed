using System.Collections.Immutable;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// Per-vCPU TLBs (spec/Tdp/VcpuTlbs.cs, docs/tdp-concurrency.md, "Per-vCPU TLBs"): known answers of what a vCPU
/// may still use, the checker accepting a stale hit only while the flush that takes it away has not returned
/// (a vCPU that misses a flush is caught), and the concurrent MMU explored under Coyote.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public sealed class VcpuTlbTests(ITestOutputHelper output)
{
    static readonly VmConfig Config = new(TdpFormat.Ept);

    static readonly ImmutableArray<TdpOp> Setup =
        [new TdpOp.CreateSlot(0, 0, 0x400, 0x100000, PageSize.Size2M, false), new TdpOp.SetMaxPageSize(PageSize.Size2M)];

    static TdpState Run(TdpState s, params TdpOp[] ops)
    {
        foreach (var op in ops) s = s.Step(op).State;
        return s;
    }

    static TdpState Initial => Run(TdpState.Create(Config), [.. Setup]);

    static TdpOp Read(ulong gfn) => new TdpOp.AccessGpa(gfn << 12, AccessType.Read);

    static TdpResult.Mapped Hit2M(ulong gfn) => new(0x100000000 + (gfn << 12), PageSize.Size2M, Faulted: false);

    [Fact]
    public void A_zapped_leaf_may_be_used_by_an_access_that_began_before_the_zap_returned_and_not_after()
    {
        var mapped = Run(Initial, Read(5));
        var zapped = Run(mapped, new TdpOp.ZapRange(0, 0x200));
        var tlbs = VcpuTlbs.Empty.Step(mapped, zapped, returnedAt: 10);
        Assert.Equal([Hit2M(7)], tlbs.MayUse(Config, 7 << 12, AccessType.Read, enteredAt: 9));
        Assert.Empty(tlbs.MayUse(Config, 7 << 12, AccessType.Read, enteredAt: 11));
        Assert.Empty(tlbs.MayUse(Config, 0x201 << 12, AccessType.Read, enteredAt: 9)); // not under the leaf
        // An operation that never returned may never have delivered its flush.
        var pending = VcpuTlbs.Empty.Step(mapped, zapped, VcpuTlbs.Pending);
        Assert.Equal([Hit2M(7)], pending.MayUse(Config, 7 << 12, AccessType.Write, enteredAt: 1_000));
    }

    [Fact]
    public void A_later_flush_over_the_gfn_takes_a_stale_translation_away_too()
    {
        var mapped = Run(Initial, Read(5));
        var zapped = Run(mapped, new TdpOp.ZapRange(0, 0x200));
        var tlbs = VcpuTlbs.Empty.Step(mapped, zapped, VcpuTlbs.Pending);      // the zap is still running
        var refaulted = Run(zapped, Read(5));
        var zappedAgain = Run(refaulted, new TdpOp.ZapRange(0, 0x200));
        // The same translation held again and lost again: only its newest loss counts.
        tlbs = tlbs.Step(zapped, refaulted, 20).Step(refaulted, zappedAgain, 30);
        Assert.Single(tlbs.Stale);
        Assert.Empty(tlbs.MayUse(Config, 7 << 12, AccessType.Read, enteredAt: 31));
        Assert.Single(tlbs.MayUse(Config, 7 << 12, AccessType.Read, enteredAt: 29));
    }

    [Fact]
    public void A_translation_that_only_gained_rights_stays_usable_read_only_and_a_held_one_is_not_stale()
    {
        var logging = Run(TdpState.Create(Config), new TdpOp.CreateSlot(0, 0, 0x400, 0x100000, PageSize.Size4K, false),
            new TdpOp.SetMaxPageSize(PageSize.Size4K), new TdpOp.SetDirtyLogging(0, true), Read(5));
        var written = Run(logging, new TdpOp.AccessGpa(5 << 12, AccessType.Write)); // read-only -> writable: no flush owed
        Assert.True(TdpTlb.MustFlush(logging, written).IsEmpty);
        var tlbs = VcpuTlbs.Empty.Step(logging, written, 5);
        var stale = Assert.Single(tlbs.Stale);
        Assert.Empty(stale.Flushes);
        Assert.Single(tlbs.MayUse(Config, 5 << 12, AccessType.Read, enteredAt: 100));
        Assert.Empty(tlbs.MayUse(Config, 5 << 12, AccessType.Write, enteredAt: 100));
        Assert.Same(tlbs, tlbs.Step(written, Run(written, Read(5)), 6)); // a hit changes no table
    }

    static HistoryEvent<TdpOp, TdpLinResult> Invoke(int thread, TdpOp op) => HistoryEvent<TdpOp, TdpLinResult>.Invoke(thread, op);

    static HistoryEvent<TdpOp, TdpLinResult> Respond(int thread, VmResult r) => HistoryEvent<TdpOp, TdpLinResult>.Respond(thread, new TdpLinResult(r));

    [Fact]
    public void A_vcpu_that_still_uses_a_translation_after_the_zap_that_flushed_it_returned_is_caught()
    {
        var spec = new TdpLinSpec(Run(Initial, Read(5)));
        var zap = new TdpOp.ZapRange(0, 0x200);
        // T0's read begins after the zap returned: its flush reached every vCPU, so a 2 MiB hit is a missed flush.
        var missed = History<TdpOp, TdpLinResult>.FromEvents([
            Invoke(1, zap), Respond(1, VmResult.Ok.Instance), Invoke(0, Read(7)), Respond(0, Hit2M(7))]);
        var verdict = Linearizability.Check(missed, spec);
        output.WriteLine(verdict.Explanation);
        Assert.False(verdict.IsLinearizable);
        // The same answer while the zap is still running: its flush may not have reached T0 yet.
        var racing = History<TdpOp, TdpLinResult>.FromEvents([
            Invoke(1, zap), Invoke(0, Read(7)), Respond(0, Hit2M(7)), Respond(1, VmResult.Ok.Instance)]);
        Assert.True(Linearizability.Check(racing, spec).IsLinearizable);
        // Without the stale translation the racing read is not explained by any order (the zap came first or last).
        Assert.False(Linearizability.Check(racing, new TdpLinSpec(Initial)).IsLinearizable);
    }

    /// <summary>
    /// A host unmap's return ends every stale translation over its range, whoever owes the flush (VcpuTlbs.Unmapped;
    /// KVM a835429cda91): T1's zap cleared the 2 MiB leaf and has not returned (it yields with its flush owed), T2's
    /// invalidation of gfns [1, 8) finds nothing left and returns, and T0's read of gfn 5 that begins after that still
    /// hits the old leaf: the host may already have freed the page. The same read racing the invalidation is allowed.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_vcpu_using_a_translation_after_a_host_unmap_over_it_returned_is_caught_even_while_the_zap_still_owes_the_flush(bool invalidation)
    {
        var spec = new TdpLinSpec(Run(Initial, Read(5)));
        var zap = new TdpOp.ZapRange(0, 0x200);
        TdpOp unmap = invalidation ? new TdpOp.HostInvalidateStart(1, 8) : new TdpOp.ZapRange(1, 8);
        var after = History<TdpOp, TdpLinResult>.FromEvents([
            Invoke(1, zap), Invoke(2, unmap), Respond(2, VmResult.Ok.Instance), Invoke(0, Read(5)), Respond(0, Hit2M(5)), Respond(1, VmResult.Ok.Instance)]);
        var verdict = Linearizability.Check(after, spec);
        output.WriteLine(verdict.Explanation);
        Assert.False(verdict.IsLinearizable);
        // The read began before the unmap returned: its vCPU may not have been reached yet.
        var racing = History<TdpOp, TdpLinResult>.FromEvents([
            Invoke(1, zap), Invoke(2, unmap), Invoke(0, Read(5)), Respond(2, VmResult.Ok.Instance), Respond(0, Hit2M(5)), Respond(1, VmResult.Ok.Instance)]);
        Assert.True(Linearizability.Check(racing, spec).IsLinearizable);
        // Outside the unmapped gfns the zap's own flush still decides: gfn 9 may hit until the zap returns.
        var outside = History<TdpOp, TdpLinResult>.FromEvents([
            Invoke(1, zap), Invoke(2, unmap), Respond(2, VmResult.Ok.Instance), Invoke(0, Read(9)), Respond(0, Hit2M(9)), Respond(1, VmResult.Ok.Instance)]);
        Assert.True(Linearizability.Check(outside, spec).IsLinearizable);
    }

    [Fact]
    public void Unmapped_stamps_the_unmap_s_return_on_the_stale_translations_it_covers_only()
    {
        var mapped = Run(Initial, Read(5));
        var zapped = Run(mapped, new TdpOp.ZapRange(0, 0x200));
        var tlbs = VcpuTlbs.Empty.Step(mapped, zapped, VcpuTlbs.Pending);
        Assert.Single(tlbs.MayUse(Config, 5 << 12, AccessType.Read, enteredAt: 50));
        var unmapped = tlbs.Unmapped(GfnRanges.Of(new GfnRange(1, 8)), returnedAt: 40);
        Assert.Empty(unmapped.MayUse(Config, 5 << 12, AccessType.Read, enteredAt: 50));
        Assert.Single(unmapped.MayUse(Config, 5 << 12, AccessType.Read, enteredAt: 39));
        Assert.Single(unmapped.MayUse(Config, 9 << 12, AccessType.Read, enteredAt: 50));
        Assert.Same(tlbs, tlbs.Unmapped(GfnRanges.Of(new GfnRange(1, 8)), VcpuTlbs.Pending)); // not returned: nothing ends yet
    }

    [Fact]
    public void Under_coyote_a_vcpu_entering_between_a_zap_and_its_request_uses_its_stale_entry_and_every_history_is_linearizable()
    {
        var program = new ConcurrentProgram<TdpOp>([[Read(5), Read(7)], [new TdpOp.ZapRange(0, 0x200)]]);
        var reached = new HashSet<string>();
        int stale = 0;
        var verdict = ConcurrentTdpCheck.Run(new ConcurrentTdpCase(Config, Setup, program, 1, 100), s => reached.Add(s), e => stale += e.StaleTlbHits);
        output.WriteLine($"{verdict}; stale hits {stale}; reached {string.Join(", ", reached)}");
        Assert.False(verdict.Failed, verdict.Failure);
        Assert.True(stale > 0, "no schedule ran the read between the zap and its flush request");
        Assert.True(ConcurrentTdpCheck.Run(new ConcurrentTdpCase(Config, Setup, program, 1, 100)).Schedules == verdict.Schedules);
        Assert.Contains("concurrent path: remote flush served", reached);
    }
}
