using FsCheck;
using MmuSpec.Harness.Diff;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>A named differential property: the unit that tests, campaigns and replays share.</summary>
public sealed record NamedProperty(string Name, string Law, Arbitrary<WalkCase> Arbitrary)
{
    public bool Holds(WalkCase c) => WalkDiff.Run(c).Agreed;
    public string Explain(WalkCase c) => WalkDiff.Run(c).Render();
}

/// <summary>The walk issue's differential properties, one per paging mode plus one over all modes.</summary>
public static class WalkProperties
{
    public static readonly IReadOnlyList<NamedProperty> All =
    [
        new("walk-any-mode", "Spec_and_impl_agree_on_every_step_of_a_walk_sequence", WalkGen.Arbitrary()),
        new("walk-bits32", "Spec_and_impl_agree_in_32bit_paging", WalkGen.Arbitrary(PagingMode.Bits32)),
        new("walk-pae", "Spec_and_impl_agree_in_PAE_paging", WalkGen.Arbitrary(PagingMode.Pae)),
        new("walk-long4", "Spec_and_impl_agree_in_4level_paging", WalkGen.Arbitrary(PagingMode.Long4)),
        new("walk-long5", "Spec_and_impl_agree_in_5level_paging", WalkGen.Arbitrary(PagingMode.Long5)),
    ];

    public static NamedProperty Find(string name) =>
        All.FirstOrDefault(p => p.Name.Equals(name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown property '{name}' (known: {string.Join(", ", All.Select(p => p.Name))})");
}
