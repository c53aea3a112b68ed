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
/// The collapsible zap (dirty logging turned off, ConcurrentTdpMmu.Collapsible.cs) under the read side racing faults
/// under Coyote: faults that map 2 MiB over a link the walk is about to zap, write faults under links it has not
/// reached, a second slot change. Every history must be explained by the spec's collapsible walk of steps
/// (TdpState.Collapsible.cs), the final tables included; links must have been zapped, and some fault must have
/// replaced a link first so the walk's exchange lost. 100 schedules per program and strategy, seed 20261205.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class CollapsibleExplorationTests(ITestOutputHelper output)
{
    const uint Iterations = 100, Seed = 20261205;

    // A logging slot on 2 MiB host pages with 4 KiB leaves in its two 2 MiB ranges: logging off drops both links.
    static readonly TdpOp[] Setup =
    [
        Slot(PageSize.Size2M),
        new TdpOp.SetMaxPageSize(PageSize.Size2M),
        new TdpOp.SetDirtyLogging(0, true),
        Read(0x1), Read(0x5), Read(0x201),
    ];

    public static readonly ConcurrentProgram<TdpOp> ZapAndFaults = new(
    [
        [new TdpOp.SetDirtyLogging(0, false)],
        [Read(0x3), Write(0x5)],
        [Read(0x203), Write(0x1)],
    ]);

    public static readonly ConcurrentProgram<TdpOp> ZapLoggingAgainAndFaults = new(
    [
        [new TdpOp.SetDirtyLogging(0, false), Read(0x7)],
        [Write(0x205), new TdpOp.SetDirtyLogging(0, true)],
        [Read(0x1), Write(0x3)],
    ]);

    [Theory]
    [InlineData(nameof(ZapAndFaults), AccessedDirty.Untracked)]
    [InlineData(nameof(ZapLoggingAgainAndFaults), AccessedDirty.Enabled)]
    public void The_collapsible_zap_racing_faults_is_linearizable_to_the_spec_s_walk(string name, AccessedDirty ad)
    {
        var program = name == nameof(ZapAndFaults) ? ZapAndFaults : ZapLoggingAgainAndFaults;
        long zapped = 0, lost = 0, retired = 0;
        foreach (var strategy in Strategies)
        {
            int checkedRuns = 0;
            var subject = ConcurrentTdpSubject.Create<EptFormat, CoyoteSchedulePoint>(new VmConfig(TdpFormat.Ept, accessedDirty: ad), Setup,
                program.Threads.Count, vm =>
                {
                    checkedRuns++;
                    zapped += vm.Mmu.CollapsibleLinksZapped;
                    lost += vm.Mmu.RangeWalkExchangesLost;
                    retired += vm.Mmu.DeferredTablesRetired;
                });
            ExploreOrFail(subject, program, $"collapsible-{name}", strategy, Iterations, Seed);
            Assert.InRange(checkedRuns, (int)Iterations - 5, (int)Iterations);
            output.WriteLine($"{name} {strategy}: {Iterations} schedules, {checkedRuns} judged; links zapped {zapped}, exchanges lost {lost}, tables retired {retired} so far");
        }
        Assert.True(zapped > 0, "no link zapped");
        Assert.True(retired > zapped, "no fault replaced a link under the read side");
        if (name == nameof(ZapAndFaults)) Assert.True(lost > 0, "no collapsible exchange lost");
    }
}
