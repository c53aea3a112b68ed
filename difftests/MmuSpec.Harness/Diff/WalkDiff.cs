using System.Collections.Immutable;
using System.Text;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Machine;

namespace MmuSpec.Harness.Diff;

/// <summary>The first step where spec and impl disagree. Step is 0-based; -1 means booting.</summary>
public sealed record Divergence(int Step, object? Op, string SpecResult, string ImplResult, ImmutableArray<string> StateDifferences);

/// <summary>The outcome of running one case on both sides.</summary>
public sealed record DiffReport(WalkCase Case, int StepsRun, Divergence? Divergence)
{
    public bool Agreed => Divergence is null;

    /// <summary>The counterexample as printed on failure: ops, the divergent step, both results, the state difference.</summary>
    public string Render()
    {
        if (Divergence is not { } d) return $"spec and impl agree on all {StepsRun} steps";
        var sb = new StringBuilder();
        sb.AppendLine(Case.Render(d.Step >= 0 ? d.Step : null));
        sb.AppendLine(d.Step < 0 ? "first divergence: at boot" : $"first divergence: step {d.Step + 1}: {d.Op}");
        sb.AppendLine($"  spec: {d.SpecResult}");
        sb.AppendLine($"  impl: {d.ImplResult}");
        if (d.StateDifferences.Length > 0)
        {
            sb.AppendLine("  state difference after the step:");
            foreach (var line in d.StateDifferences) sb.AppendLine("    " + line);
        }
        return sb.ToString().TrimEnd();
    }
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
            return report with { Divergence = new Divergence(c.Ops.Length - 1, null, "all pages freed", $"{pool.PagesInUse} pages still allocated", ImmutableArray<string>.Empty) };
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
