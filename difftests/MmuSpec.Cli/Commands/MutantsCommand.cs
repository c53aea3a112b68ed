using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Mutants;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec mutants</c>: reintroduces each catalogued KVM bug (difftests/mutants/*.patch) into a
/// temporary copy of impl/, builds it, runs a fixed-seed campaign, and prints whether the
/// differential tests caught it, how fast, and how short the shrunk counterexample is
/// (docs/bug-catalog.md). Exit 0 when every bug is caught within the budget and shrunk to at most
/// <c>--max-ops</c> operations; 1 when one is not, or a patch no longer applies or builds.
/// </summary>
public static class MutantsCommand
{
    public const ulong DefaultSeed = 20261121;

    public static Command Create()
    {
        var budget = Cli.Duration("--budget", "campaign time per bug, also the target time to catch it (default 60 s)");
        var seed = Cli.Number("--seed", $"master seed of every campaign (default {DefaultSeed})", "seed");
        var only = new Option<string?>("--only") { Description = "run only the entries whose name contains one of these comma-separated words", HelpName = "names" };
        var maxOps = new Option<int>("--max-ops") { Description = "target length of a shrunk counterexample (default 12)", HelpName = "n", DefaultValueFactory = _ => 12 };
        maxOps.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!int.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n <= 0))
                r.AddError($"--max-ops: '{r.Tokens[0].Value}' is not a positive number");
        });
        var shrink = Cli.Duration("--shrink-allowance", "time a caught bug's campaign may spend shrinking before it counts as timed out (default 5m)");
        var format = Cli.Choice("--format", "output: a text table, a Markdown table (for docs/bug-catalog.md) or JSON", "text", "text", "markdown", "json");
        var list = Cli.Flag("--list", "print the catalog and exit without building anything");
        var keep = Cli.Flag("--keep", "keep the temporary copy (sources, builds, counterexample files) for inspection");

        var command = new Command("mutants", "Reintroduce each catalogued historical KVM MMU bug into impl/ and check that the differential campaign catches it (docs/bug-catalog.md).");
        foreach (var o in new Option[] { budget, seed, only, maxOps, shrink, format, list, keep }) command.Add(o);
        command.SetAction(p =>
        {
            string root = SourceTree.FindRoot(Environment.CurrentDirectory)
                ?? throw new InputException("mmuspec mutants runs from inside the MmuSpec repository (no MmuSpec.sln here or above)");
            var entries = Select(MutantCatalog.Load(root), p.GetValue(only));
            if (p.GetValue(list))
            {
                Console.WriteLine(Catalog(entries));
                return Cli.Ok;
            }
            var options = new MutantRunOptions(
                p.GetValue(budget) ?? TimeSpan.FromSeconds(60), p.GetValue(seed) ?? DefaultSeed, p.GetValue(maxOps),
                p.GetValue(shrink) ?? TimeSpan.FromMinutes(5), p.GetValue(keep));
            return Run(root, entries, options, p.GetValue(format)!);
        });
        return command;
    }

    static IReadOnlyList<MutantEntry> Select(IReadOnlyList<MutantEntry> all, string? only)
    {
        if (only is null) return all;
        var words = only.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var chosen = all.Where(e => words.Any(w => e.Name.Contains(w, StringComparison.OrdinalIgnoreCase))).ToList();
        return chosen.Count > 0 ? chosen
            : throw new InputException($"--only: no catalog entry matches '{only}' (entries: {string.Join(", ", all.Select(e => e.Name))})");
    }

    static int Run(string root, IReadOnlyList<MutantEntry> entries, MutantRunOptions options, string format)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Console.Error.WriteLine(FormattableString.Invariant(
            $"mmuspec mutants: {Harness.Running.CaseRuns.Count(entries.Count, "catalogued bug")}, {options.Budget.TotalSeconds:0} s campaign each, seed {options.Seed}, target <= {options.MaxOps} ops"));
        var run = new MutantRun(root, options, line => Console.Error.WriteLine(FormattableString.Invariant($"[{clock.Elapsed.TotalSeconds,6:0}s] {line}")));
        var outcomes = run.Run(entries);
        var verdicts = outcomes.Select(o => (Outcome: o, Verdict: Verdict(o, options))).ToList();

        Console.WriteLine(format switch
        {
            "markdown" => Markdown(verdicts),
            "json" => Json(verdicts, options, clock.Elapsed),
            _ => Text(verdicts),
        });
        int failed = verdicts.Count(v => v.Verdict is not null);
        Console.Error.WriteLine(FormattableString.Invariant(
            $"mutants: {outcomes.Count(o => o.Caught)} of {outcomes.Count} caught, {failed} miss{(failed == 1 ? "es" : "")} a target, {clock.Elapsed.TotalMinutes:0.0} min"));
        if (options.Keep) Console.Error.WriteLine($"kept: {run.WorkDirectory}");
        return failed == 0 ? Cli.Ok : Cli.Diverged;
    }

    /// <summary>Null when the outcome meets every target, else what it misses.</summary>
    static string? Verdict(MutantOutcome o, MutantRunOptions options) =>
        !o.Caught ? o.Status
        : o.SecondsToCatch > options.Budget.TotalSeconds ? "caught too late"
        : o.ShrunkOps is not { } n || n > options.MaxOps ? $"counterexample over {options.MaxOps} ops"
        : null;

    static string Seconds(double? s) => s is { } v ? v.ToString("0.0", CultureInfo.InvariantCulture) : "-";
    static string Count(int? n) => n?.ToString(CultureInfo.InvariantCulture) ?? "-";
    static string Schedules(long? n) => n?.ToString(CultureInfo.InvariantCulture) ?? "-";

    static string Text(List<(MutantOutcome Outcome, string? Verdict)> rows)
    {
        var table = new TextTable("bug", "caught", "seconds", "ops", "schedules", "property", "upstream fix").AlignRight(2, 3, 4);
        foreach (var (o, v) in rows)
            table.Add(o.Entry.Name, v is null ? "yes" : o.Caught ? $"yes, {v}" : $"NO: {v}", Seconds(o.SecondsToCatch), Count(o.ShrunkOps), Schedules(o.Schedules), o.Property ?? "-", o.Entry.Upstream);
        var sb = new StringBuilder(table.Render());
        foreach (var (o, v) in rows.Where(r => r.Verdict is not null))
            sb.AppendLine().AppendLine($"{o.Entry.Name}: {v}").AppendLine(Indent(o.Detail));
        return sb.ToString().TrimEnd();
    }

    static string Indent(string text) => string.Join('\n', text.Split('\n').Select(l => "    " + l.TrimEnd('\r')));

    static string Markdown(List<(MutantOutcome Outcome, string? Verdict)> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| bug | caught | seconds to catch | shrunk ops | property | cases run | schedules explored |");
        sb.AppendLine("|---|---|---:|---:|---|---:|---:|");
        foreach (var (o, v) in rows)
            sb.AppendLine(FormattableString.Invariant(
                $"| `{o.Entry.Name}` | {(v is null ? "yes" : o.Caught ? $"yes ({v})" : $"**no: {v}**")} | {Seconds(o.SecondsToCatch)} | {Count(o.ShrunkOps)} | {o.Property ?? "-"} | {o.Cases} | {Schedules(o.Schedules)} |"));
        return sb.ToString().TrimEnd();
    }

    static string Json(List<(MutantOutcome Outcome, string? Verdict)> rows, MutantRunOptions options, TimeSpan elapsed)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WalkJson.WriterOptions(indented: true)))
        {
            w.WriteStartObject();
            w.WriteNumber("seed", options.Seed);
            w.WriteNumber("budget_seconds", options.Budget.TotalSeconds);
            w.WriteNumber("max_ops", options.MaxOps);
            w.WriteNumber("seconds", Math.Round(elapsed.TotalSeconds, 1));
            w.WriteStartArray("bugs");
            foreach (var (o, v) in rows)
            {
                w.WriteStartObject();
                w.WriteString("name", o.Entry.Name);
                w.WriteString("upstream", o.Entry.Upstream);
                w.WriteString("status", o.Status);
                w.WriteBoolean("meets_targets", v is null);
                if (o.SecondsToCatch is { } s) w.WriteNumber("seconds_to_catch", Math.Round(s, 2)); else w.WriteNull("seconds_to_catch");
                if (o.ShrunkOps is { } n) w.WriteNumber("shrunk_ops", n); else w.WriteNull("shrunk_ops");
                w.WriteString("property", o.Property);
                w.WriteNumber("cases", o.Cases);
                if (o.Schedules is { } sched) w.WriteNumber("schedules", sched); else w.WriteNull("schedules");
                w.WriteNumber("build_seconds", Math.Round(o.BuildSeconds, 1));
                w.WriteString("detail", o.Detail);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    static string Catalog(IReadOnlyList<MutantEntry> entries)
    {
        var sb = new StringBuilder();
        foreach (var e in entries)
        {
            sb.AppendLine($"{e.Name}: {e.Title}");
            sb.AppendLine($"    upstream:   {e.Upstream} ({e.Commit})");
            sb.AppendLine($"    cause:      {e.Cause}");
            sb.AppendLine($"    patch:      {string.Join(", ", e.Files)}");
            sb.AppendLine($"    properties: {string.Join(", ", e.Properties)}");
        }
        return sb.ToString().TrimEnd();
    }
}
