using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Nested;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;

namespace MmuSpec.Harness.Running;

/// <summary>
/// Every differential family, registered once: code that holds a case as <c>object</c> finds its
/// family here by the case's type, and a JSON reader by the case's "kind". A new family is one line
/// in <see cref="All"/> (docs/adding-a-family.md).
/// </summary>
public static class Families
{
    public static readonly WalkFamily Walk = new();
    public static readonly TdpFamily Tdp = new();
    public static readonly ShadowFamily Shadow = new();
    public static readonly ConcurrentTdpFamily ConcurrentTdp = new();
    public static readonly NestedEptFamily NestedEpt = new();

    /// <summary>The registry, in report order.</summary>
    public static readonly IReadOnlyList<IDiffFamily> All = Checked([Walk, Tdp, Shadow, ConcurrentTdp, NestedEpt]);

    /// <summary>The registry refuses two families of one name or one case type: a lookup must find exactly one.</summary>
    public static IReadOnlyList<IDiffFamily> Checked(IReadOnlyList<IDiffFamily> families)
    {
        if (families.GroupBy(f => f.Name).FirstOrDefault(g => g.Count() > 1) is { } name)
            throw new InvalidOperationException($"two families are named '{name.Key}'");
        if (families.GroupBy(f => f.CaseType).FirstOrDefault(g => g.Count() > 1) is { } type)
            throw new InvalidOperationException($"two families run {type.Key.Name} cases");
        return families;
    }

    /// <summary>The family whose cases are of type <paramref name="caseType"/>.</summary>
    public static IDiffFamily ForCaseType(Type caseType) =>
        All.FirstOrDefault(f => f.CaseType == caseType)
        ?? throw new ArgumentException($"{caseType.Name} is not a case type ({string.Join(", ", All.Select(f => f.CaseType.Name))})", nameof(caseType));

    /// <summary>The family of case <paramref name="c"/>.</summary>
    public static IDiffFamily For(object c) => ForCaseType(c.GetType());

    /// <summary>The family named <paramref name="name"/> (a property's family, a case's JSON "kind"), or null.</summary>
    public static IDiffFamily? Named(string name) => All.FirstOrDefault(f => f.Name == name);

    /// <summary>The family of <typeparamref name="TCase"/> cases, typed.</summary>
    public static DiffFamily<TCase> Of<TCase>() where TCase : notnull => (DiffFamily<TCase>)ForCaseType(typeof(TCase));
}
