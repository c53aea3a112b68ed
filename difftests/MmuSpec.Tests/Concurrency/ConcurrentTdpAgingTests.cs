using MmuSpec.Harness.Concurrency;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using Xunit.Abstractions;
using static MmuSpec.Tests.Concurrency.CoyoteExploration;
using static MmuSpec.Tests.TdpSteps;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// Aging racing faults in the concurrent TDP MMU (docs/tdp-model.md, "Aging"), under Coyote's controlled
/// scheduler: one thread ages and tests the age of a range while two vCPUs fault and hit in it, with EPT A/D
/// on (aging clears A; hits set A and D by compare-and-exchange), EPT A/D off (aging zaps under the read
/// lock: freeze, flush, clear) and stage-2 without hardware AF (aging clears AF, the next access takes an
/// access-flag fault). Every explored history must be linearizable to the spec, accessed and dirty state
/// of the final leaves included. 150 schedules per program and strategy, seed 20261204.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class ConcurrentTdpAgingTests(ITestOutputHelper output)
{
    const uint Iterations = 150, Seed = 20261204;

    static readonly TdpOp[] Setup =
    [
        Slot(PageSize.Size2M),
        new TdpOp.SetMaxPageSize(PageSize.Size4K),
    ];

    /// <summary>Faults and hits on two gfns of one leaf table while the third thread ages and tests them.</summary>
    static readonly ConcurrentProgram<TdpOp> AgeRacesFaults = new(
    [
        [Read(0x1), Write(0x2), Read(0x1)],
        [Write(0x1), Read(0x2)],
        [new TdpOp.Age(0, 0x200), new TdpOp.TestAge(0, 0x200), new TdpOp.Age(1, 2)],
    ]);

    public static TheoryData<string> Vms => new() { "ept-ad", "ept-no-ad", "stage2-no-ha" };

    [Theory]
    [MemberData(nameof(Vms))]
    public void Every_explored_schedule_of_aging_racing_faults_is_linearizable_to_the_spec(string vm)
    {
        var (young, old) = vm switch
        {
            "ept-ad" => Explore<EptFormat>(vm, new VmConfig(TdpFormat.Ept, accessedDirty: AccessedDirty.Enabled)),
            "ept-no-ad" => Explore<EptFormat>(vm, new VmConfig(TdpFormat.Ept, accessedDirty: AccessedDirty.Disabled)),
            _ => Explore<Stage2Format>(vm, new VmConfig(TdpFormat.Stage2, accessedDirty: AccessedDirty.Disabled)),
        };
        // Not a vacuous pass: the schedules put aging both after and before the faults it races.
        Assert.True(young > 0 && old > 0, $"{vm}: aging answered young {young} times and old {old} times");
    }

    (int Young, int Old) Explore<TFormat>(string vm, VmConfig config) where TFormat : struct, IPteFormat
    {
        int young = 0, old = 0;
        foreach (var strategy in Strategies)
        {
            int checkedRuns = 0;
            var subject = ConcurrentTdpSubject.Create<TFormat, CoyoteSchedulePoint>(config, Setup, AgeRacesFaults.Threads.Count, _ => checkedRuns++)
                .Observing((op, result) =>
                {
                    if (op is TdpOp.Age && result.Result is TdpResult.Young y)
                    {
                        if (y.IsYoung) young++;
                        else old++;
                    }
                });
            var result = ExploreOrFail(subject, AgeRacesFaults, $"tdp-aging-{vm}", strategy, Iterations, Seed);
            output.WriteLine($"{vm} {strategy}: {result.Iterations} schedules, {checkedRuns} checked");
            Assert.InRange(checkedRuns, (int)Iterations - 5, (int)Iterations);
        }
        output.WriteLine($"{vm}: age answered young {young}, old {old}");
        return (young, old);
    }
}
