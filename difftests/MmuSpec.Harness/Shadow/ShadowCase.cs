using System.Collections.Immutable;
using System.Text;
using MmuSpec.Spec.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// One generated shadow-MMU test case: a VM configuration, the setup operations (memslots, the
/// guest's page tables written with guest stores, paging turned on) and the operations under test.
/// Both parts run on both sides and are compared after every step; they are kept apart only so
/// that the shrinker can treat the setup more carefully.
/// </summary>
public sealed record ShadowCase(ShadowConfig Config, ImmutableArray<ShadowOp> Setup, ImmutableArray<ShadowOp> Ops)
{
    public ShadowCase WithOps(IEnumerable<ShadowOp> ops) => this with { Ops = ops.ToImmutableArray() };
    public ShadowCase WithSetup(IEnumerable<ShadowOp> setup) => this with { Setup = setup.ToImmutableArray() };

    /// <summary>Setup then ops: what actually runs, in order (a step index counts in this sequence).</summary>
    public IEnumerable<ShadowOp> AllOps => Setup.Concat(Ops);

    public int Length => Setup.Length + Ops.Length;

    public ShadowOp this[int step] => step < Setup.Length ? Setup[step] : Ops[step - Setup.Length];

    public bool Equals(ShadowCase? other) =>
        other is not null && Config.Equals(other.Config) && Setup.SequenceEqual(other.Setup) && Ops.SequenceEqual(other.Ops);

    public override int GetHashCode() => HashCode.Combine(Config, Setup.Length, Ops.Length);

    public override string ToString() => Render(null);

    /// <summary>The case as a kernel engineer reads it, one operation a line, numbered across setup and ops;
    /// <paramref name="highlightStep"/> (0-based, across both) is marked.</summary>
    public string Render(int? highlightStep)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"vm: {Config}");
        sb.AppendLine($"setup ({Setup.Length}):");
        for (int i = 0; i < Setup.Length; i++)
            sb.AppendLine($"  {(i == highlightStep ? ">>" : "  ")}{i + 1,3}. {Setup[i]}");
        sb.AppendLine($"ops ({Ops.Length}):");
        for (int i = 0; i < Ops.Length; i++)
        {
            int step = Setup.Length + i;
            sb.AppendLine($"  {(step == highlightStep ? ">>" : "  ")}{step + 1,3}. {Ops[i]}");
        }
        return sb.ToString().TrimEnd();
    }
}
