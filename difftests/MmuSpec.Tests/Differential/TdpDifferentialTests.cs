using System.Diagnostics;
using MmuSpec.Harness.Running;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Oracle 1 and 2 for the TDP MMU: random operation sequences (memslot changes, faults, zaps,
/// dirty logging, policy changes, shared and private gpas) run on the spec's MMU model and the
/// impl's TDP MMU, results and abstract state compared after every step, per table format and VM kind.
/// </summary>
public sealed class TdpDifferentialTests(ITestOutputHelper output, PropertyProgress progress) : IClassFixture<PropertyProgress>
{
    [Theory]
    [MemberData(nameof(RegisteredProperties.TdpMmus), MemberType = typeof(RegisteredProperties))]
    public void Spec_and_impl_TDP_MMUs_agree_after_every_operation(string property)
    {
        var time = Stopwatch.StartNew();
        var p = DiffProperties.Find(property);   // its TestCases: the quick tier's count (MMUSPEC_MAX_TEST overrides)
        var runner = p.Check(output.WriteLine, PropertyCheck.MaxTest(p.TestCases), PropertyCheck.ReplayFromEnvironment());
        Assert.True(runner.TestsRun > 0, "the property ran no case");
        progress.Passed(property, runner.TestsRun, time.Elapsed);
    }
}
