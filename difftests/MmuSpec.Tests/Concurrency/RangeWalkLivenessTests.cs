using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using MmuSpec.Tests.Differential;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// The liveness judgement of range walks (<see cref="RangeWalkWatch"/>, docs/concurrency-testing.md "Liveness"):
/// an op whose walks restart more often than a walk that yields only after progress can fails its schedule with
/// "no forward progress"; the bound never fires on the unmutated MMU over the campaign's cases; the counters are
/// charged to the thread that ran since the previous schedule point.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public sealed class RangeWalkLivenessTests(ITestOutputHelper output)
{
    static readonly VmConfig Config = new(TdpFormat.Ept);

    sealed class Counters
    {
        public long Restarts, Lost;
    }

    static (RangeWalkWatch Watch, Counters Counters) NewWatch(int threads = 2)
    {
        var counters = new Counters();
        var watch = new RangeWalkWatch(threads, () => counters.Restarts, () => counters.Lost, op => RangeWalkWatch.MaxRestarts(op, Config, []));
        return (watch, counters);
    }

    [Fact]
    public void The_bound_is_the_range_s_frames_once_per_root_walked()
    {
        var slot = new TdpOp.CreateSlot(0, 0, 0x400, 0x100000, PageSize.Size2M, false);
        var slot1 = new TdpOp.CreateSlot(1, 0x400, 0x200, 0x200000, PageSize.Size4K, false);
        Assert.Equal(0x200, RangeWalkWatch.MaxRestarts(new TdpOp.ZapRange(0, 0x200), Config, [slot]));
        Assert.Equal(7, RangeWalkWatch.MaxRestarts(new TdpOp.Age(1, 8), Config, [slot]));
        Assert.Equal(0x400, RangeWalkWatch.MaxRestarts(new TdpOp.SetDirtyLogging(0, true), Config, [slot, slot1]));
        Assert.Equal(0x200, RangeWalkWatch.MaxRestarts(new TdpOp.SetDirtyLogging(1, true), Config, [slot, slot1]));
        Assert.Equal(0x600, RangeWalkWatch.MaxRestarts(new TdpOp.ZapAll(), Config, [slot, slot1])); // no range: every slot's
        // With a shared bit the walk goes over the direct root and the mirror root.
        Assert.Equal(0x400, RangeWalkWatch.MaxRestarts(new TdpOp.ZapRange(0, 0x200), new VmConfig(TdpFormat.Ept, 47), [slot]));
    }

    [Fact]
    public void A_walk_that_restarts_more_than_its_range_allows_fails_with_no_forward_progress_where_it_dropped_the_lock()
    {
        var (watch, counters) = NewWatch();
        var zap = new TdpOp.ZapRange(0, 4);
        watch.Enter(1, zap);
        try
        {
            counters.Restarts += 4; // as many as a walk over 4 frames may take
            RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other);
            counters.Restarts++;
            RangeWalkWatch.AtSchedulePoint(SchedulePointKind.LockAcquire); // not where the walk holds nothing: no verdict here
            var e = Assert.Throws<NoForwardProgressException>(() => RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other));
            output.WriteLine(e.Message);
            Assert.Contains("no forward progress: T1's zap gfn", e.Message, StringComparison.Ordinal);
            Assert.Contains("5 times", e.Message, StringComparison.Ordinal);
            Assert.Contains("at most 4", e.Message, StringComparison.Ordinal);
        }
        finally { watch.Leave(1); }
        // Outside an op nothing is judged.
        counters.Restarts += 100;
        RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other);
    }

    [Fact]
    public void Counters_are_charged_to_the_op_of_the_thread_that_ran_since_the_last_point()
    {
        var (watch, counters) = NewWatch();
        var age = new TdpOp.Age(0, 4);
        var logging = new TdpOp.SetDirtyLogging(0, true);
        // T0 ages: it restarts 3 times and loses an exchange.
        watch.Enter(0, age);
        counters.Restarts += 3;
        counters.Lost++;
        RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other);
        watch.Leave(0);
        Assert.Equal(0, watch.WriteProtectExchangesLost); // aging's loss is not write-protection's
        // T1 write-protects for dirty logging: it loses two exchanges and restarts 4 times (over a 0x400-frame slot).
        watch.Enter(1, logging);
        counters.Lost += 2;
        RangeWalkWatch.AtSchedulePoint(SchedulePointKind.SpteExchange);
        counters.Restarts += 4;
        watch.Leave(1);
        Assert.Equal(2, watch.WriteProtectExchangesLost);
        Assert.Equal(4, watch.MostRestarts);
        // T0's 3 restarts never joined T1's: T0's op was over (had they, 7 would exceed an Age(0, 4)'s bound of 4).
        watch.Enter(0, age);
        counters.Restarts += 4;
        RangeWalkWatch.AtSchedulePoint(SchedulePointKind.Other); // 4 of 4: still allowed
        watch.Leave(0);
    }

    /// <summary>A toy walk that never moves its cursor, under Coyote: the schedule fails with the verdict and the timeline, not at the step bound.</summary>
    [Fact]
    public void A_livelocked_walk_under_coyote_fails_its_schedule_with_no_forward_progress_and_the_timeline()
    {
        var program = new ConcurrentProgram<TdpOp>([[new TdpOp.ZapRange(0, 0x10)], [new TdpOp.AccessGpa(0x5000, AccessType.Read)]]);
        RangeWalkWatch? watch = null;
        var subject = new ConcurrentSubject<Counters, int, TdpOp, int>(
            () =>
            {
                var c = new Counters();
                watch = new RangeWalkWatch(2, () => Volatile.Read(ref c.Restarts), () => 0, op => RangeWalkWatch.MaxRestarts(op, Config, []));
                return c;
            },
            (c, thread, op) =>
            {
                watch!.Enter(thread, op);
                try
                {
                    if (op is TdpOp.ZapRange)
                        while (true) // drop the lock, restart at the same cursor
                        {
                            CoyoteSparseSchedulePoint.Yield(SchedulePointKind.Other);
                            Interlocked.Increment(ref c.Restarts);
                        }
                    CoyoteSparseSchedulePoint.Yield(SchedulePointKind.SpteRead);
                    return 1;
                }
                finally { watch.Leave(thread); }
            },
            new ToyCountSpec());
        var r = ScheduleExploration.Explore(subject, program, new ExplorationSettings(3, 20261205));
        output.WriteLine(r.Failure);
        Assert.True(r.Failed);
        Assert.Equal(1, r.Iterations);
        Assert.StartsWith("no forward progress: T0's zap gfn", r.Failure, StringComparison.Ordinal);
        Assert.Contains("17 times", r.Failure, StringComparison.Ordinal);
        Assert.Contains("on T0 never responded", r.Failure, StringComparison.Ordinal); // the timeline, the walk still pending
        Assert.DoesNotContain("   at ", r.Failure, StringComparison.Ordinal); // no stack trace
    }

    sealed class ToyCountSpec : ISequentialSpec<int, TdpOp, int>
    {
        public int Initial => 0;
        public (int Result, int Next) Step(int state, TdpOp op) => (1, state);
    }

    /// <summary>
    /// The proof on the unmutated MMU: over the `dotnet test` cases of both concurrent properties (drawn as the
    /// default campaign draws them), every schedule passes and no op's walks came near the bound.
    /// </summary>
    [Theory]
    [MemberData(nameof(RegisteredProperties.ConcurrentMmus), MemberType = typeof(RegisteredProperties))]
    public void No_walk_of_the_campaign_s_cases_comes_near_the_restart_bound(string property)
    {
        var p = DiffProperties.Find(property);
        long most = 0, boundOfMost = 0, schedules = 0;
        double worst = 0;
        foreach (ConcurrentTdpCase c in p.Sample(20261121, p.TestCases))
        {
            var v = ConcurrentTdpCheck.Run(c, null, e =>
            {
                schedules++;
                if (e.MostWalkRestartsBound > 0 && (double)e.MostWalkRestarts / e.MostWalkRestartsBound > worst)
                    (worst, most, boundOfMost) = ((double)e.MostWalkRestarts / e.MostWalkRestartsBound, e.MostWalkRestarts, e.MostWalkRestartsBound);
            });
            Assert.False(v.Failed, $"{c}\n{v.Failure}");
        }
        output.WriteLine($"{property}: {schedules} judged schedules; most restarts of one op against its bound: {most} of {boundOfMost}");
        Assert.True(schedules > 0);
        Assert.True(worst < 0.5, $"an op restarted {most} times against a bound of {boundOfMost}");
    }
}
