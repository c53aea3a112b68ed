using MmuSpec.Harness.Running;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The differential test classes take their properties from the registry (<see cref="DiffProperties.All"/>),
/// not from lists of names: a property registered in a family runs in `dotnet test` by being registered.
/// The shadow family's cached-root properties run in <see cref="CachedRootTests"/> beside the root
/// scenarios, the rest of it in <see cref="ShadowDifferentialTests"/>.
/// </summary>
public static class RegisteredProperties
{
    /// <summary>The shadow properties whose cases switch among many address spaces (cached roots, PCIDs, INVPCID).</summary>
    public static bool IsCachedRoots(DiffProperty p) => p.Family == DiffProperties.ShadowFamily && p.Name.StartsWith("shadow-roots-", StringComparison.Ordinal);

    public static TheoryData<string> Walks => Names(p => p.Family == DiffProperties.WalkFamily);
    public static TheoryData<string> TdpMmus => Names(p => p.Family == DiffProperties.TdpFamily);
    public static TheoryData<string> ShadowMmus => Names(p => p.Family == DiffProperties.ShadowFamily && !IsCachedRoots(p));
    public static TheoryData<string> CachedRoots => Names(IsCachedRoots);
    public static TheoryData<string> ConcurrentMmus => Names(p => p.Family == DiffProperties.ConcurrentTdpFamily);
    public static TheoryData<string> NestedMmus => Names(p => p.Family == DiffProperties.NestedEptFamily);

    static TheoryData<string> Names(Func<DiffProperty, bool> where)
    {
        var data = new TheoryData<string>();
        foreach (var p in DiffProperties.All.Where(where)) data.Add(p.Name);
        return data;
    }
}

public sealed class RegisteredPropertiesTests
{
    [Fact]
    public void Every_registered_property_runs_in_exactly_one_differential_test()
    {
        var run = new[] { RegisteredProperties.Walks, RegisteredProperties.TdpMmus, RegisteredProperties.ShadowMmus, RegisteredProperties.CachedRoots, RegisteredProperties.ConcurrentMmus, RegisteredProperties.NestedMmus }
            .SelectMany(d => d.Cast<object[]>().Select(row => (string)row[0])).ToList();
        Assert.Equal(DiffProperties.All.Select(p => p.Name).Order(StringComparer.Ordinal), run.Order(StringComparer.Ordinal));
        Assert.Equal(2, RegisteredProperties.CachedRoots.Cast<object[]>().Count());
    }
}
