using System.CommandLine;
using System.Globalization;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using MmuSpec.Spec.Machine;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec replay</c>: regenerates one case from its "seed,gamma,size" token, traces it on spec and
/// impl side by side up to the first divergence, and prints the diff report.
/// </summary>
public static class ReplayCommand
{
    public static Command Create()
    {
        var token = new Argument<string?>("token")
        {
            Description = $"\"seed,gamma,size\" as printed by a failure (default: ${PropertyCheck.ReplayVariable})",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var property = new Option<string?>("--property") { Description = "the property the token came from", HelpName = "name" };
        var command = new Command("replay", "Rerun one case from a replay token and trace spec and impl step by step.") { token, property };
        command.SetAction(p =>
        {
            string text = p.GetValue(token) ?? Environment.GetEnvironmentVariable(PropertyCheck.ReplayVariable)
                ?? throw new InputException($"replay needs a token \"seed,gamma,size\" (or ${PropertyCheck.ReplayVariable})");
            string name = p.GetValue(property)
                ?? throw new InputException($"replay needs --property NAME: the property the token came from ({string.Join(", ", DiffProperties.All.Select(x => x.Name))})");
            FsCheck.Replay replay;
            try { replay = PropertyCheck.ParseReplay(text); }
            catch (FormatException e) { throw new InputException(e.Message); }
            DiffProperty prop;
            try { prop = DiffProperties.Find(name); }
            catch (ArgumentException e) { throw new InputException($"--property: {Messages.Of(e)}"); }
            return Run(prop, replay, text.Trim());
        });
        return command;
    }

    static int Run(DiffProperty p, FsCheck.Replay replay, string token)
    {
        // Regenerate the case exactly as the failing run drew it: a one-case run from the token. The
        // predicate only captures the case (and says it holds, so FsCheck does not shrink it).
        object? generated = null;
        PropertyCheck.Check(p.Name, p, _ => { }, 1, replay, throwOnFailure: false, holds: c => { generated ??= c; return true; });
        return generated switch
        {
            WalkCase c => RunWalk(c, p, token),
            TdpCase c => RunTdp(c, p, token),
            ShadowCase c => RunShadow(c, p, token),
            _ => throw new InvalidOperationException("FsCheck generated no case for the token"),
        };
    }

    static int RunWalk(WalkCase c, DiffProperty p, string token)
    {
        var report = WalkDiff.Run(c);
        Console.WriteLine($"replay {token} --property {p.Name}: {c.Ops.Length} ops, {c.Setup.Length} setup writes");
        Console.WriteLine();
        Console.WriteLine(Trace(c, report));
        return Finish(report.Agreed, report.Render());
    }

    static int RunTdp(TdpCase c, DiffProperty p, string token)
    {
        var report = TdpDiff.Run(c);
        Console.WriteLine($"replay {token} --property {p.Name}: {c.Ops.Length} ops on a {c.Config} VM");
        var spec = TdpState.Create(c.Config);
        using var impl = new ImplTdpEngine(c.Config, new MmuSpec.Impl.Memory.NativePagePool());
        return TraceSteps(c.Ops, report.Divergence, report.Agreed, report.Render(),
            op => { var s = spec.Step(op); spec = s.State; return TdpDiff.Describe(s.Result); },
            op => TdpDiff.Describe(impl.Step(op)));
    }

    static int RunShadow(ShadowCase c, DiffProperty p, string token)
    {
        var report = ShadowDiff.Run(c);
        Console.WriteLine($"replay {token} --property {p.Name}: {c.Setup.Length} setup ops and {c.Ops.Length} ops on a {c.Config} VM");
        var spec = ShadowState.Create(c.Config);
        using var impl = new ImplShadowEngine(c.Config, new MmuSpec.Impl.Memory.NativePagePool());
        return TraceSteps([.. c.AllOps], report.Divergence, report.Agreed, report.Render(),
            op => { var s = spec.Step(op); spec = s.State; return ShadowDiff.Describe(s.Result); },
            op => ShadowDiff.Describe(impl.Step(op)));
    }

    /// <summary>
    /// An MMU case step by step, the spec's and the impl's result side by side, up to the step where
    /// the report says they diverge (or to the end), then the report.
    /// </summary>
    static int TraceSteps<TOp>(IReadOnlyList<TOp> ops, Divergence? divergence, bool agreed, string rendered,
        Func<TOp, string> specStep, Func<TOp, string> implStep) where TOp : notnull
    {
        Console.WriteLine();
        var table = new TextTable("", "step", "op", "spec", "impl").AlignRight(1);
        int stopAt = divergence is { Step: >= 0 } d ? d.Step : ops.Count - 1;
        for (int i = 0; i <= stopAt && i < ops.Count; i++)
        {
            string sr, ir;
            try { sr = specStep(ops[i]); } catch (Exception e) { sr = Threw(e); }
            try { ir = implStep(ops[i]); } catch (Exception e) { ir = Threw(e); }
            bool diverges = i == stopAt && divergence is not null;
            table.Add(diverges ? ">>" : "", (i + 1).ToString(CultureInfo.InvariantCulture), ops[i].ToString()!, sr,
                sr == ir ? (diverges ? "same result, state differs" : "same") : ir);
        }
        Console.WriteLine("trace (spec | impl):" + Environment.NewLine + table.Render("  "));
        return Finish(agreed, rendered);
    }

    static int Finish(bool agreed, string rendered)
    {
        Console.WriteLine();
        Console.WriteLine(rendered);
        Console.WriteLine();
        Console.WriteLine(agreed ? "result: spec and impl agree" : "result: spec and impl DIVERGE");
        return agreed ? Cli.Ok : Cli.Diverged;
    }

    /// <summary>Each op with the spec's and the impl's result side by side, up to the first divergence.</summary>
    static string Trace(WalkCase c, DiffReport report)
    {
        var table = new TextTable("", "step", "op", "spec", "impl").AlignRight(1);
        var spec = c.BootSpec();
        ImplWalkEngine? impl = null;
        string implBoot;
        try { impl = ImplWalkEngine.Boot(c); implBoot = impl is null ? "#GP" : "ok"; }
        catch (Exception e) { implBoot = Threw(e); }
        using var implScope = impl;
        string specBoot = spec is null ? "#GP" : "ok";
        int stopAt = report.Divergence?.Step ?? c.Ops.Length - 1;
        table.Add(stopAt < 0 ? ">>" : "", "boot", $"{c.Controls}, CR3={Hex.Format(c.Cr3)}", specBoot, specBoot == implBoot ? "same" : implBoot);
        if (spec is not null && impl is not null)
        {
            using var specEngine = new SpecEngine(spec);
            for (int i = 0; i <= stopAt && i < c.Ops.Length; i++)
            {
                var op = c.Ops[i];
                string sr = Describe(specEngine, op), ir = Describe(impl, op);
                bool diverges = i == stopAt && report.Divergence is not null;
                string implCell = sr == ir ? (diverges ? "same result, state differs" : "same") : ir;
                table.Add(diverges ? ">>" : "", (i + 1).ToString(CultureInfo.InvariantCulture), op.ToString()!, sr, implCell);
            }
        }
        string tail = report.Agreed ? $"all {c.Ops.Length} steps agree" : $"stopped at the first divergence (step {(report.Divergence!.Step < 0 ? "boot" : (report.Divergence.Step + 1).ToString(CultureInfo.InvariantCulture))} of {c.Ops.Length})";
        return "trace (spec | impl):" + Environment.NewLine + table.Render("  ") + Environment.NewLine + "  " + tail;
    }

    static string Describe(IWalkEngine engine, Op op)
    {
        try { return WalkDiff.Describe(engine.Step(op)); }
        catch (Exception e) { return Threw(e); }
    }

    static string Threw(Exception e) => $"threw {e.GetType().Name}: {e.Message}";
}
