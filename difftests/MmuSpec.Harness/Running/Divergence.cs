using System.Collections.Immutable;
using System.Text;

namespace MmuSpec.Harness.Running;

/// <summary>
/// The first step where spec and impl disagree, in any family. Step is 0-based; -1 is a moment
/// outside the steps that the family names (<see cref="IDiffFamily.WhenNoStep"/>: booting, or
/// destroying the VM); a step past the last is an end-of-case check the family words as an op.
/// </summary>
public sealed record Divergence(int Step, string? Op, string SpecResult, string ImplResult, ImmutableArray<string> StateDifferences)
{
    /// <summary>
    /// The counterexample as printed on failure: the case (with the divergent step marked), the step,
    /// both results and the state difference. <paramref name="renderCase"/> renders the case with a
    /// highlighted step; <paramref name="whenNoStep"/> names the moment of a divergence outside the ops.
    /// </summary>
    public string Render(Func<int?, string> renderCase, string whenNoStep)
    {
        var sb = new StringBuilder();
        sb.AppendLine(renderCase(Step >= 0 ? Step : null));
        sb.AppendLine(Step < 0 ? $"first divergence: {whenNoStep}" : $"first divergence: step {Step + 1}: {Op}");
        sb.AppendLine($"  spec: {SpecResult}");
        sb.AppendLine($"  impl: {ImplResult}");
        if (StateDifferences.Length > 0)
        {
            sb.AppendLine("  state difference after the step:");
            foreach (var line in StateDifferences) sb.AppendLine("    " + line);
        }
        return sb.ToString().TrimEnd();
    }
}

/// <summary>Where in a case a lockstep record sits.</summary>
public enum StepKind
{
    /// <summary>Both sides start from the case (the walk family boots a vCPU, which may #GP).</summary>
    Boot,
    /// <summary>One operation of the case (shadow: setup operations count as steps too).</summary>
    Op,
    /// <summary>The case is over and the impl destroyed: every native page must be back in the pool.</summary>
    End,
}

/// <summary>
/// One step of a lockstep run, as the comparator judges it and as replay and the failure report print it.
/// <paramref name="Index"/> is the 0-based op index: -1 for boot, and for the end the op count when
/// the family words the end check as a step after the last (walk), else -1 (outside the steps);
/// <paramref name="Operation"/> is the op (or the boot's or end's words), printed only when asked for
/// (<see cref="Op"/>): an agreeing step costs no text; <paramref name="Spec"/> and <paramref name="Impl"/> are the results as the family describes them (or
/// "threw ..."); <paramref name="ResultsDiffer"/> is the family's structural comparison of the results;
/// <paramref name="Differences"/> are the lines of the first check after the step that failed (state,
/// oracle 2, the family's own checks), empty when every check held; <paramref name="Allowance"/>, when the impl's
/// result differs from the spec's but the spec allows it too (<see cref="LockstepSession{TOp, TResult}.Allowance"/>), says why.
/// </summary>
public sealed record StepRecord(StepKind Kind, int Index, object Operation, string Spec, string Impl, bool ResultsDiffer, ImmutableArray<string> Differences,
    string? Allowance = null)
{
    /// <summary>The operation as the trace prints it.</summary>
    public string Op => Operation as string ?? Operation.ToString()!;

    public bool Diverges => ResultsDiffer || Differences.Length > 0;
}
