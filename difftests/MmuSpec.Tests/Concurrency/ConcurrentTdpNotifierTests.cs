using MmuSpec.Harness.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using Xunit.Abstractions;
using static MmuSpec.Tests.Concurrency.CoyoteExploration;
using static MmuSpec.Tests.TdpSteps;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// MMU notifiers on the concurrent TDP MMU (docs/tdp-concurrency.md, "MMU notifiers") under Coyote's controlled
/// scheduler: faults on one gfn race a host invalidation of it (Start, End) under the write side. Every
/// explored history must be linearizable to the spec (a fault may answer Retry; one that maps must name the
/// frame the page has in that order) with the final leaves and notifier state of that order. 150 schedules
/// per strategy (prioritization and random), seed 20261204. The variant without the sequence check is the
/// catalog's difftests/mutants/concurrency/04-fault-ignores-invalidation-sequence.patch (caught by `mmuspec mutants`);
/// impl keeps no switch for it.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class ConcurrentTdpNotifierTests(ITestOutputHelper output)
{
    const uint Iterations = 150, Seed = 20261204;
    const ulong Gfn = 0x10;

    static readonly VmConfig Config = new(TdpFormat.Ept);

    static readonly TdpOp[] Setup =
    [
        Slot(PageSize.Size2M),
        new TdpOp.SetMaxPageSize(PageSize.Size4K),
    ];

    /// <summary>Two vCPUs fault on the gfn (and its neighbour) while a third invalidates the gfn: the host migrates its page.</summary>
    static readonly ConcurrentProgram<TdpOp> FaultsAndInvalidation = new(
    [
        [Read(Gfn), Write(Gfn)],
        [Read(Gfn + 1), Read(Gfn)],
        [new TdpOp.HostInvalidateStart(Gfn, Gfn + 1), new TdpOp.HostInvalidateEnd(Gfn, Gfn + 1)],
    ]);

    sealed record Run(ExplorationResult<TdpOp, TdpLinResult> Result, int Retries, int MovedFrames);

    static Run Explore(ScheduleStrategy strategy)
    {
        int retries = 0, moved = 0;
        var subject = ConcurrentTdpSubject.Create<EptFormat, CoyoteSchedulePoint>(Config, Setup, FaultsAndInvalidation.Threads.Count)
            .Observing((_, result) =>
            {
                if (result.IsRetry) retries++;
                // A mapping of the moved page: its frame has the migration bit (TdpState.MigratedFrameBit).
                if (result.Result is TdpResult.Mapped m && (m.Hpa >> 12 & TdpState.MigratedFrameBit) != 0) moved++;
            });
        return new(ExploreOrFail(subject, FaultsAndInvalidation, "tdp-notifier", strategy, Iterations, Seed), retries, moved);
    }

    [Fact]
    public void Faults_racing_a_host_invalidation_are_linearizable_to_the_spec()
    {
        int retries = 0, moved = 0;
        foreach (var strategy in Strategies)
        {
            var run = Explore(strategy);
            output.WriteLine($"{strategy}: {run.Result.Iterations} schedules, {run.Result.Checked} checked, {run.Retries} Retry answers, {run.MovedFrames} mappings of the moved frame");
            Assert.Equal((int)Iterations, run.Result.Iterations);
            Assert.InRange(run.Result.Checked, (int)Iterations - 5, (int)Iterations);
            retries += run.Retries;
            moved += run.MovedFrames;
        }
        // Not a vacuous pass: faults met the invalidation in progress (or a moved sequence), and others mapped the page where it moved.
        Assert.True(retries > 0, "no fault ever answered Retry");
        Assert.True(moved > 0, "no fault ever mapped the moved frame");
    }
}
