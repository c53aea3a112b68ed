using System.Collections.Immutable;
using System.Text;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;

namespace MmuSpec.Harness.Nested;

/// <summary>
/// A nested VM as a case configures it: L1's MAXPHYADDR, whether the processor offers L1 execute-only EPT entries, and
/// the impl's policy for cached roots at INVEPT (the spec has no roots: both policies must give its answers), and whether
/// the impl unsyncs shadowed leaf EPT tables (then it may answer from stale entries, as oracle 2 allows).
/// </summary>
/// <param name="GvaTlb">The impl caches L2's gva translations per VPID (nested-ept-vpid); oracle 2 then judges its stale ones.</param>
/// <param name="L2GlobalPages">L2 runs with CR4.PGE: a leaf with G makes a global combined mapping.</param>
public sealed record NestedEptConfig(int MaxPhyAddr, bool ExecuteOnly, NestedRootPolicy RootPolicy, bool Unsync = false, bool GvaTlb = false, bool L2GlobalPages = false)
{
    /// <summary>What the spec's EPT walk is told the processor offers: MBEC off (KVM does not offer it to L1), the rest on.</summary>
    public EptCapabilities Caps => EptCapabilities.Default.WithExecuteOnly(ExecuteOnly).WithMaxPhyAddr(MaxPhyAddr);

    public override string ToString() =>
        $"MAXPHYADDR {MaxPhyAddr}, execute-only {(ExecuteOnly ? "offered" : "not offered")}, roots {(RootPolicy == NestedRootPolicy.Upstream ? "upstream" : "keep-and-resync")}{(Unsync ? ", unsync leaf pages" : "")}{(GvaTlb ? ", gva TLB" : "")}{(L2GlobalPages ? ", L2 CR4.PGE" : "")}";
}

/// <summary>
/// One generated nested-EPT case: the setup (L1's memslots, its EPT tables written with L1 stores, the first VM entry)
/// and the operations under test. Both run on both sides, compared after every step; they are apart only so the
/// shrinker can treat the setup more carefully.
/// </summary>
public sealed record NestedEptCase(NestedEptConfig Config, ImmutableArray<NestedEptOp> Setup, ImmutableArray<NestedEptOp> Ops)
{
    public NestedEptCase WithOps(IEnumerable<NestedEptOp> ops) => this with { Ops = ops.ToImmutableArray() };
    public NestedEptCase WithSetup(IEnumerable<NestedEptOp> setup) => this with { Setup = setup.ToImmutableArray() };

    public IEnumerable<NestedEptOp> AllOps => Setup.Concat(Ops);
    public int Length => Setup.Length + Ops.Length;

    public bool Equals(NestedEptCase? other) =>
        other is not null && Config.Equals(other.Config) && Setup.SequenceEqual(other.Setup) && Ops.SequenceEqual(other.Ops);

    public override int GetHashCode() => HashCode.Combine(Config, Setup.Length, Ops.Length);

    public override string ToString() => Render(null);

    public string Render(int? highlightStep)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"nested VM: {Config}");
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
