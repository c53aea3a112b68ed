using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec replay</c>: reruns one case, from a counterexample file (as a failure writes it) or from a
/// "seed,gamma,size" token (regenerating the unshrunk case), traces it on spec and impl side by side
/// up to the first divergence, dumps both sides' state there and prints the diff report.
/// <c>--shrink</c> shrinks a file's case further and writes the result.
/// </summary>
public static class ReplayCommand
{
    static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(2);

    public static Command Create()
    {
        var target = new Argument<string?>("file-or-token")
        {
            Description = $"a counterexample file (as a failure writes it), or \"seed,gamma,size\" as a failure prints it (default: ${PropertyCheck.ReplayVariable})",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var property = new Option<string?>("--property") { Description = "the property a token came from (a file names its own)", HelpName = "name" };
        var shrink = Cli.Flag("--shrink", "shrink the file's case further and write the result as a new counterexample file");
        var output = new Option<string?>("--out") { Description = "where --shrink writes (default: FILE with .shrunk.json in place of .json)", HelpName = "path" };
        var command = new Command("replay", "Rerun one case from a counterexample file or a replay token and trace spec and impl step by step.")
        {
            target, property, shrink, output,
        };
        command.SetAction(p =>
        {
            string text = p.GetValue(target) ?? Environment.GetEnvironmentVariable(PropertyCheck.ReplayVariable)
                ?? throw new InputException($"replay needs a counterexample file or a token \"seed,gamma,size\" (or ${PropertyCheck.ReplayVariable})");
            string? name = p.GetValue(property);
            if (IsFile(text))
            {
                var x = CounterexampleFile.Load(text);
                if (name is not null && !name.Equals(x.Property.Name, StringComparison.OrdinalIgnoreCase))
                    throw new InputException($"--property {name}: {text} is a counterexample of {x.Property.Name} (a file names its property; drop --property)");
                NoteOtherCommit(x, text);
                return p.GetValue(shrink) ? Shrink(x, text, p.GetValue(output)) : RunFile(x, text);
            }
            if (p.GetValue(shrink) || p.GetValue(output) is not null)
                throw new InputException($"--shrink and --out need a counterexample file, not a token ('{text}' is not a file)");
            if (name is null)
                throw new InputException($"replay needs --property NAME with a token: the property the token came from ({string.Join(", ", DiffProperties.All.Select(x => x.Name))})");
            // The property first: a bad token must not hide an unknown name.
            DiffProperty prop;
            try { prop = DiffProperties.Find(name); }
            catch (ArgumentException e) { throw new InputException($"--property: {Messages.Of(e)}"); }
            FsCheck.Replay replay;
            try { replay = PropertyCheck.ParseReplay(text); }
            catch (FormatException e) { throw new InputException((p.GetValue(target) is null ? $"${PropertyCheck.ReplayVariable}: " : "") + e.Message); }
            return RunToken(prop, replay, text.Trim());
        });
        return command;
    }

    /// <summary>A counterexample file rather than a token: an existing file, or a name ending in .json.</summary>
    static bool IsFile(string text) => File.Exists(text) || text.EndsWith(".json", StringComparison.OrdinalIgnoreCase);

    static void NoteOtherCommit(Counterexample x, string path)
    {
        var now = BuildVersions.Current;
        if (x.Versions.OtherCommitThan(now))
            Cli.Note($"{path} was written by commit {Short(x.Versions.Commit)}; this mmuspec is commit {Short(now.Commit)}");
    }

    static string Short(string commit) => commit.Length > 12 ? commit[..12] : commit;

    static int RunToken(DiffProperty p, FsCheck.Replay replay, string token)
    {
        // Regenerate the case exactly as the failing run drew it: a one-case run from the token. The
        // predicate only captures the case (and says it holds, so FsCheck neither shrinks it nor writes a file).
        object? generated = null;
        PropertyCheck.Check(p.Name, p, _ => { }, 1, replay, throwOnFailure: false, holds: c => { generated ??= c; return true; });
        if (generated is null) throw new InvalidOperationException("FsCheck generated no case for the token");
        Console.WriteLine($"replay {token} --property {p.Name}: {CaseRuns.Summary(generated)}");
        return generated is ConcurrentTdpCase concurrent ? PrintConcurrent(concurrent) : Print(CaseRuns.Trace(generated));
    }

    static int RunFile(Counterexample x, string path)
    {
        Console.WriteLine($"replay {path}: {x.Property.Name}, {CaseRuns.Summary(x.Case)}");
        Console.WriteLine($"  {Origin(x)}");
        if (x.Divergence is { } d) Console.WriteLine($"  recorded: {d.Message} (spec: {d.Spec} | impl: {d.Impl})");
        else if (x.Exception is { } e) Console.WriteLine($"  recorded: the property threw {e}");
        return x.Case is ConcurrentTdpCase concurrent ? PrintConcurrent(concurrent) : Print(CaseRuns.Trace(x.Case));
    }

    /// <summary>
    /// A concurrent case has no steps to trace: its program, then its one recorded schedule rerun (or, without
    /// one, its schedules explored again from the case's seed) and the checker's verdict, the history explained
    /// when no order explains it.
    /// </summary>
    static int PrintConcurrent(ConcurrentTdpCase c)
    {
        Console.WriteLine();
        Console.WriteLine(c.Render());
        var v = ConcurrentTdpCheck.Run(c);
        Console.WriteLine();
        Console.WriteLine(v.Failed ? $"{v}:\n{v.Failure}" : $"every history linearizable, the final state that order's ({v})");
        Console.WriteLine();
        Console.WriteLine(v.Failed ? "result: spec and impl DIVERGE" : "result: spec and impl agree");
        return v.Failed ? Cli.Diverged : Cli.Ok;
    }

    /// <summary>Where the case came from, in one line.</summary>
    static string Origin(Counterexample x)
    {
        var parts = new List<string>
        {
            $"written {x.Created.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)} UTC by mmuspec {x.Versions.Mmuspec}",
        };
        if (x.Seed is { } seed) parts.Add($"campaign seed {seed}" + (x.Batch is { } b ? $" batch {b}" : ""));
        if (x.ReplayToken is { } token) parts.Add($"unshrunk case: replay {token} --property {x.Property.Name}");
        return string.Join("; ", parts);
    }

    /// <summary>The trace, both sides' state at the divergence, the diff report and the verdict.</summary>
    static int Print(CaseTrace t)
    {
        Console.WriteLine();
        var table = new TextTable("", "step", "op", "spec", "impl").AlignRight(1);
        foreach (var r in t.Rows) table.Add(r.Divergent ? ">>" : "", r.Step, r.Op, r.Spec, r.Impl);
        Console.WriteLine("trace (spec | impl):" + Environment.NewLine + table.Render("  ") + Environment.NewLine + "  " + t.Tail);

        if (t.State.Length > 0)
        {
            var at = t.Rows.LastOrDefault(r => r.Divergent)?.Step is { } step ? (step == "boot" ? "boot" : $"step {step}") : "the divergence";
            var state = new TextTable("", "item", "spec", "impl");
            foreach (var r in t.State) state.Add(r.Differs ? "*" : "", r.Item, r.Spec, r.Differs ? r.Impl : "same");
            Console.WriteLine();
            Console.WriteLine($"state after {at} (spec | impl, * where they differ):");
            Console.WriteLine(state.Render("  "));
            if (t.StateRowsHidden > 0) Console.WriteLine($"  ... and {t.StateRowsHidden} more rows, equal on both sides");
        }
        if (t.StateNote is { } note)
        {
            Console.WriteLine();
            Console.WriteLine($"state: {note}");
        }
        return Finish(t.Agreed, t.Report);
    }

    static int Finish(bool agreed, string rendered)
    {
        Console.WriteLine();
        Console.WriteLine(rendered);
        Console.WriteLine();
        Console.WriteLine(agreed ? "result: spec and impl agree" : "result: spec and impl DIVERGE");
        return agreed ? Cli.Ok : Cli.Diverged;
    }

    /// <summary>
    /// <c>replay FILE --shrink</c>: shrinks the file's case with the property's own shrinker and single
    /// deletions (<see cref="CaseShrinker"/>) and writes the result as a new counterexample file. A case on
    /// which spec and impl agree has nothing to shrink: a message, no file, exit 0 (the replay verdict).
    /// </summary>
    static int Shrink(Counterexample x, string path, string? outPath)
    {
        var p = x.Property;
        string target = CounterexampleFile.ShrinkTarget(path, outPath);
        Console.WriteLine($"shrink {path}: {p.Name}, {CaseRuns.Summary(x.Case)}");
        if (!CaseShrinker.Fails(p, x.Case))
        {
            Console.WriteLine();
            Console.WriteLine("spec and impl agree on this case: nothing to shrink, no file written");
            Console.WriteLine();
            Console.WriteLine("result: spec and impl agree");
            return Cli.Ok;
        }
        var clock = Stopwatch.StartNew();
        var lastProgress = TimeSpan.Zero;
        var result = CaseShrinker.Shrink(p, x.Case, progress: runs =>
        {
            if (clock.Elapsed - lastProgress < ProgressEvery) return;
            lastProgress = clock.Elapsed;
            Console.Error.WriteLine(FormattableString.Invariant($"[{clock.Elapsed.TotalSeconds,6:0.0}s] {CaseRuns.Count(runs, "run")}"));
        });
        var shrunk = CounterexampleFile.Create(p, result.Case, x.ReplayToken, x.Seed, x.Batch);
        try { CounterexampleFile.WriteTo(shrunk, target); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"cannot write the shrunk case to '{target}': {e.Message}");
        }

        Console.WriteLine(FormattableString.Invariant(
            $"ops: {p.OpCount(x.Case)} -> {p.OpCount(result.Case)} ({CaseRuns.Summary(x.Case)} -> {CaseRuns.Summary(result.Case)})"));
        Console.WriteLine(FormattableString.Invariant(
            $"shrinking: {CaseRuns.Count(result.Runs, "run")}, {CaseRuns.Count(result.Taken, "smaller case")} taken, {clock.Elapsed.TotalSeconds:0.0} s{(result.HitLimit ? $" (stopped at the limit of {CaseShrinker.DefaultMaxRuns} runs)" : "")}"));
        Console.WriteLine();
        Console.WriteLine(p.Explain(result.Case));
        Console.WriteLine();
        Console.WriteLine($"written: {target}");
        Console.WriteLine($"replay: dotnet run --project difftests/MmuSpec.Cli -- replay {(target.Contains(' ', StringComparison.Ordinal) ? $"\"{target}\"" : target)}");
        Console.WriteLine();
        Console.WriteLine("result: spec and impl DIVERGE");
        return Cli.Diverged;
    }
}
