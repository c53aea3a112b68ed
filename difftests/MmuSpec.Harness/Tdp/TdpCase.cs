using System.Collections.Immutable;
using System.Text;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>One generated TDP test case: a VM configuration and the operations run on it.</summary>
public sealed record TdpCase(VmConfig Config, ImmutableArray<TdpOp> Ops)
{
    public TdpCase WithOps(IEnumerable<TdpOp> ops) => this with { Ops = ops.ToImmutableArray() };

    public bool Equals(TdpCase? other) => other is not null && Config.Equals(other.Config) && Ops.SequenceEqual(other.Ops);
    public override int GetHashCode() => HashCode.Combine(Config, Ops.Length);

    public override string ToString() => Render(null);

    /// <summary>The case as a kernel engineer reads it; <paramref name="highlightStep"/> (0-based) is marked.</summary>
    public string Render(int? highlightStep)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"vm: {Config}");
        sb.AppendLine($"ops ({Ops.Length}):");
        for (int i = 0; i < Ops.Length; i++)
            sb.AppendLine($"  {(i == highlightStep ? ">>" : "  ")}{i + 1,3}. {Ops[i]}");
        return sb.ToString().TrimEnd();
    }
}
