using MmuSpec.Harness.Walk;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>The kvm-unit-tests access.c style enumeration, spec against impl.</summary>
public sealed class AccessEnumerationTests(ITestOutputHelper output)
{
    [Fact]
    public void Spec_and_impl_agree_on_every_flag_combination_of_PDE_PTE_CPU_and_access()
    {
        var report = AccessEnumeration.Run();
        output.WriteLine($"{report.Cases} cases: {report.Translated} translated, {report.Faults} faulted");
        Assert.True(report.Cases >= 200_000, $"the enumeration should cover at least 200,000 cases, ran {report.Cases}");
        // Both outcomes must be common, or the enumeration is not exercising the rights logic.
        // (Most combinations fault: P=0, a reserved bit, or XD without NXE in either entry.)
        Assert.True(report.Translated > 50_000 && report.Faults > 50_000,
            $"unbalanced enumeration: {report.Translated} translated, {report.Faults} faulted");
        Assert.True(report.Agreed, "spec and impl disagree:\n" + string.Join("\n", report.Mismatches));
    }
}
