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
/// The concurrent TDP MMU (impl/TdpConcurrent, EPT, no shared bit) against the sequential spec
/// (<see cref="TdpState"/>) under Coyote's controlled scheduler: three logical threads, each with its own
/// vCPU, fault on gfns of one slot chosen to share tables, while one of them also changes the policy or
/// zaps under the write side. Every explored history must be linearizable (an access may answer Retry,
/// the state unchanged; a Mapped answer's faulted flag must be the spec's in that order) and the leaves
/// left in the MMU's tables must be the ones that order ends with. 150 schedules per program and strategy, seed
/// 20261204, prioritization (PCT) and random; docs/concurrency-testing.md.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class ConcurrentTdpLinearizabilityTests(ITestOutputHelper output)
{
    const uint Iterations = 150, Seed = 20261204;

    static readonly VmConfig Config = new(TdpFormat.Ept);

    // One slot of two 2 MiB regions backed by 2 MiB host pages, 4 KiB mappings to start with: the first
    // region's faults share one leaf table, and a later 2 MiB policy makes a fault replace that table.
    static readonly TdpOp[] Setup =
    [
        Slot(PageSize.Size2M),
        new TdpOp.SetMaxPageSize(PageSize.Size4K),
    ];

    /// <summary>Faults on shared tables while a third vCPU raises the policy to 2 MiB and faults (a huge leaf over a table).</summary>
    public static readonly ConcurrentProgram<TdpOp> FaultsAndPolicy = new(
    [
        [Write(0x1), Read(0x2), Write(0x201)],
        [Read(0x1), Write(0x2), Read(0x200)],
        [new TdpOp.SetMaxPageSize(PageSize.Size2M), Write(0x5)],
    ]);

    /// <summary>Faults racing a zap of the first region under the write side.</summary>
    public static readonly ConcurrentProgram<TdpOp> FaultsAndZap = new(
    [
        [Read(0x1), Write(0x1), Write(0x201)],
        [Write(0x1), Read(0x3), Read(0x201)],
        [new TdpOp.ZapRange(0, 0x200), Write(0x3)],
    ]);

    public static TheoryData<string> Programs => new() { nameof(FaultsAndPolicy), nameof(FaultsAndZap) };

    static ConcurrentProgram<TdpOp> ProgramNamed(string name) => name == nameof(FaultsAndPolicy) ? FaultsAndPolicy : FaultsAndZap;

    // Both strategies: PCT switches threads at only a few points per schedule, so it rarely lands inside a
    // fault of the zap program; the uniform strategy interleaves inside every fault.
    [Theory]
    [MemberData(nameof(Programs))]
    public void Every_explored_schedule_of_the_concurrent_tdp_mmu_is_linearizable_to_the_spec(string name)
    {
        var program = ProgramNamed(name);
        int retries = 0;
        long replacements = 0;
        foreach (var strategy in Strategies)
        {
            var run = Explore(name, program, strategy);
            output.WriteLine($"{name} {strategy}: {Iterations} schedules, {run.Checked} ran to the end and were checked, " +
                $"{run.Accesses} accesses, {run.Retries} answered Retry, {run.Replacements} tables retired by a fault");
            // An iteration Coyote ends at its step bound (a thread spinning for mmu_lock while PCT starves the
            // holder) is not checked: nearly every one must be.
            Assert.InRange(run.Checked, (int)Iterations - 5, (int)Iterations);
            retries += run.Retries;
            replacements += run.Replacements;
        }
        // The schedules reach the racy paths (not a vacuous pass): faults lost races, and under the 2 MiB
        // policy a fault replaced a table with a huge leaf.
        Assert.True(retries > 0, $"{name}: no access ever answered Retry");
        if (name == nameof(FaultsAndPolicy))
            Assert.True(replacements > 0, "no fault ever replaced a table with a huge leaf");
    }

    sealed record Counts(int Checked, int Accesses, int Retries, long Replacements);

    /// <summary>
    /// Explores <paramref name="program"/>; on a failure, reruns the saved schedule (it must fail again:
    /// the counterexample is reproducible) and fails with the explanation and the trace file.
    /// </summary>
    static Counts Explore(string name, ConcurrentProgram<TdpOp> program, ScheduleStrategy strategy)
    {
        int retries = 0, accesses = 0, checkedRuns = 0;
        long replacements = 0;
        var subject = ConcurrentTdpSubject.Create<EptFormat, CoyoteSchedulePoint>(Config, Setup, program.Threads.Count,
            vm => { checkedRuns++; replacements += vm.Mmu.DeferredTablesRetired; })
            .Observing((op, result) =>
            {
                if (op is TdpOp.AccessGpa) accesses++;
                if (result.IsRetry) retries++;
            });
        var result = ExploreOrFail(subject, program, $"tdp-lincheck-{name}", strategy, Iterations, Seed);
        Assert.Equal((int)Iterations, result.Iterations);
        // The runner's count of judged histories and the subject's count of final reads agree.
        Assert.Equal(checkedRuns, result.Checked);
        return new(checkedRuns, accesses, retries, replacements);
    }

    [Fact]
    public void A_retry_must_leave_the_state_unchanged_and_the_faulted_flag_and_final_leaves_must_match_the_order()
    {
        // Hand-written histories on the spec alone: two concurrent first writes to one gfn cannot both
        // have faulted it in; one of them answering Retry and then hitting is fine.
        var spec = ConcurrentTdpSubject.Create<EptFormat, CoyoteSchedulePoint>(Config, Setup, 2).Spec;
        var mapped = new TdpLinResult(new TdpResult.Mapped(0x100001000, PageSize.Size4K, Faulted: true));
        var hit = new TdpLinResult(new TdpResult.Mapped(0x100001000, PageSize.Size4K, Faulted: false));
        var both = History<TdpOp, TdpLinResult>.FromEvents(
        [
            HistoryEvent<TdpOp, TdpLinResult>.Invoke(0, Write(0x1)),
            HistoryEvent<TdpOp, TdpLinResult>.Invoke(1, Write(0x1)),
            HistoryEvent<TdpOp, TdpLinResult>.Respond(0, mapped),
            HistoryEvent<TdpOp, TdpLinResult>.Respond(1, mapped),
        ]);
        var verdict = Linearizability.Check(both, spec);
        Assert.False(verdict.IsLinearizable);
        Assert.Contains("faulted in hpa 0x100001000", verdict.Explanation);
        var retried = History<TdpOp, TdpLinResult>.FromEvents(
        [
            HistoryEvent<TdpOp, TdpLinResult>.Invoke(0, Write(0x1)),
            HistoryEvent<TdpOp, TdpLinResult>.Invoke(1, Write(0x1)),
            HistoryEvent<TdpOp, TdpLinResult>.Respond(1, TdpLinResult.Retry),
            HistoryEvent<TdpOp, TdpLinResult>.Respond(0, mapped),
            HistoryEvent<TdpOp, TdpLinResult>.Invoke(1, Write(0x1)),
            HistoryEvent<TdpOp, TdpLinResult>.Respond(1, hit),
        ]);
        Assert.True(Linearizability.Check(retried, spec).IsLinearizable);

        // The results alone are explained, but tables that lost the leaf are not the state that order ends in.
        var lostLeaf = spec.Initial; // as if the fault had answered but its leaf had been overwritten
        var final = Linearizability.Check(retried, spec, lostLeaf);
        Assert.False(final.IsLinearizable);
        Assert.Contains("no order ends in the observed final state", final.Explanation);
        var kept = spec.Step(spec.Initial, Write(0x1)).Next;
        Assert.True(Linearizability.Check(retried, spec, kept).IsLinearizable);
    }
}
