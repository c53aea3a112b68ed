using System.Diagnostics;
using MmuSpec.Harness.Running;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Oracle 1 for the guest page walk: random operation sequences (accesses, page-table edits,
/// MOV CR3, control changes) run on spec and impl, results and full state compared after every
/// step. A failure prints the shrunk sequence, the first divergent step and a replay line.
/// </summary>
public sealed class WalkDifferentialTests(ITestOutputHelper output, PropertyProgress progress) : IClassFixture<PropertyProgress>
{
    [Theory]
    [MemberData(nameof(RegisteredProperties.Walks), MemberType = typeof(RegisteredProperties))]
    public void Spec_and_impl_agree_after_every_step_of_a_walk_sequence(string property)
    {
        var time = Stopwatch.StartNew();
        var p = DiffProperties.Find(property);   // its TestCases: the quick tier's count (MMUSPEC_MAX_TEST overrides)
        var runner = p.Check(output.WriteLine, PropertyCheck.MaxTest(p.TestCases), PropertyCheck.ReplayFromEnvironment());
        Assert.True(runner.TestsRun > 0, "the property ran no case");
        progress.Passed(property, runner.TestsRun, time.Elapsed);
    }
}
