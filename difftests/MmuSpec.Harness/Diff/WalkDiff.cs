using System.Collections.Immutable;
using System.Text;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;

namespace MmuSpec.Harness.Diff;

/// <summary>The first step where spec and impl disagree. Step is 0-based; -1 means booting (walk) or after the last step (TDP).</summary>
public sealed record Divergence(int Step, object? Op, string SpecResult, string ImplResult, ImmutableArray<string> StateDifferences)
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

/// <summary>The outcome of running one case on both sides.</summary>
public sealed record DiffReport(WalkCase Case, int StepsRun, Divergence? Divergence)
{
    public bool Agreed => Divergence is null;

    public string Render() => Divergence is { } d
        ? d.Render(Case.Render, "at boot")
        : Running.CaseRuns.AgreeOnAll(StepsRun);
}

/// <summary>
/// Runs a <see cref="WalkCase"/> on the spec and the impl in lock step and stops at the first step
/// where the results or the states differ (oracle 1 for the architecture layer).
/// </summary>
public static class WalkDiff
{
    public static DiffReport Run(WalkCase c)
    {
        var pool = new MmuSpec.Impl.Memory.NativePagePool();
        var report = Run(c, pool);
        // Native memory: every page the impl allocated for this case must be back in the pool.
        if (report.Agreed && pool.PagesInUse != 0)
            return report with { Divergence = new Divergence(c.Ops.Length, "destroying the guest memory", "all pages freed", $"{pool.PagesInUse} pages still allocated", ImmutableArray<string>.Empty) };
        return report;
    }

    static DiffReport Run(WalkCase c, MmuSpec.Impl.Memory.NativePagePool pool)
    {
        var spec = c.BootSpec();
        ImplWalkEngine? impl = null;
        string implBoot;
        try
        {
            impl = ImplWalkEngine.Boot(c, pool);
            implBoot = impl is null ? "#GP" : "ok";
        }
        catch (Exception e) { implBoot = Threw(e); }

        using var implScope = impl;
        string specBoot = spec is null ? "#GP" : "ok";
        if (specBoot != implBoot) return new DiffReport(c, 0, new Divergence(-1, null, specBoot, implBoot, ImmutableArray<string>.Empty));
        if (spec is null || impl is null) return new DiffReport(c, 0, null);

        using var specEngine = new SpecEngine(spec);
        var boot = MachineView.Differences(specEngine.View(), impl.View());
        if (boot.Length > 0) return new DiffReport(c, 0, new Divergence(-1, null, "ok", "ok", boot));

        for (int i = 0; i < c.Ops.Length; i++)
        {
            var op = c.Ops[i];
            string sr, ir;
            try { sr = Describe(specEngine.Step(op)); } catch (Exception e) { sr = Threw(e); }
            try { ir = Describe(impl.Step(op)); } catch (Exception e) { ir = Threw(e); }
            if (sr != ir) return new DiffReport(c, i + 1, new Divergence(i, op, sr, ir, MachineView.Differences(specEngine.View(), impl.View())));
            var diffs = MachineView.Differences(specEngine.View(), impl.View());
            if (diffs.Length > 0) return new DiffReport(c, i + 1, new Divergence(i, op, sr, ir, diffs));
        }
        return new DiffReport(c, c.Ops.Length, null);
    }

    /// <summary>
    /// The comparable form of a result. A #GP from MOV CR3 or a control change is compared as "#GP"
    /// alone: the impl, like hardware, reports no reason.
    /// </summary>
    public static string Describe(OpResult r) => r is OpResult.GeneralProtection ? "#GP" : r.ToString()!;

    static string Threw(Exception e) => $"threw {e.GetType().Name}: {e.Message}";
}
