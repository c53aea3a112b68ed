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
/// Range walks (ConcurrentTdpMmu.Yield.cs) racing faults under Coyote: a zap that yields every 2 leaves under the
/// write side, dirty logging's write-protection and an age under the read side, beside vCPUs faulting and writing
/// in and around the range. Every history must be explained by the spec's walks of per-entry steps, the final
/// leaves included; the walks must have yielded and restarted, and read-side exchanges must have lost. 100
/// schedules per program and strategy, seed 20261205.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class RangeWalkExplorationTests(ITestOutputHelper output)
{
    const uint Iterations = 100, Seed = 20261205;

    static readonly VmConfig Config = new(TdpFormat.Ept, accessedDirty: AccessedDirty.Enabled);

    // 4 KiB leaves at gfns 1-6 of a slot on 4 KiB host pages: the walks meet leaves, holes and faults.
    static readonly TdpOp[] Setup =
    [
        Slot(PageSize.Size4K),
        .. Enumerable.Range(1, 6).Select(g => Read((ulong)g)),
    ];

    public static readonly ConcurrentProgram<TdpOp> ZapAndFaults = new(
    [
        [new TdpOp.ZapRange(0, 0x10)],
        [Write(0x2), Read(0x5), Write(0x8)],
        [Read(0x6), Write(0x1)],
    ]);

    public static readonly ConcurrentProgram<TdpOp> WriteProtectAgeAndWrites = new(
    [
        [new TdpOp.SetDirtyLogging(0, true), new TdpOp.GetDirtyLog(0)],
        [Write(0x2), Write(0x5), new TdpOp.Age(0, 0x10)],
        [Write(0x5), Write(0x3), Read(0x9)],
    ]);

    [Theory]
    [InlineData(nameof(ZapAndFaults))]
    [InlineData(nameof(WriteProtectAgeAndWrites))]
    public void Range_walks_racing_faults_are_linearizable_to_the_spec_s_walks(string name)
    {
        var program = name == nameof(ZapAndFaults) ? ZapAndFaults : WriteProtectAgeAndWrites;
        long restarts = 0, lost = 0;
        foreach (var strategy in Strategies)
        {
            int checkedRuns = 0;
            var subject = ConcurrentTdpSubject.Create<EptFormat, CoyoteSchedulePoint>(Config, Setup, program.Threads.Count, vm =>
            {
                checkedRuns++;
                restarts += vm.Mmu.RangeWalkRestarts;
                lost += vm.Mmu.RangeWalkExchangesLost;
            });
            ExploreOrFail(subject, program, $"rangewalk-{name}", strategy, Iterations, Seed);
            Assert.InRange(checkedRuns, (int)Iterations - 5, (int)Iterations);
            output.WriteLine($"{name} {strategy}: {Iterations} schedules, {checkedRuns} judged; restarts {restarts}, exchanges lost {lost} so far");
        }
        Assert.True(restarts > 0, "no range walk yielded");
        if (name == nameof(WriteProtectAgeAndWrites)) Assert.True(lost > 0, "no read-side exchange lost");
    }
}
