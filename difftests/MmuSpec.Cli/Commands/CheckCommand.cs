using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec check</c>: a differential campaign of spec against impl over every property (guest walk and TDP MMU),
/// reproducible from <c>--seed</c>, within a case count or a time budget (default about 60 s).
/// </summary>
public static class CheckCommand
{
    static readonly TimeSpan DefaultBudget = TimeSpan.FromSeconds(60);
    static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(2);

    public static Command Create()
    {
        var seed = Cli.Number("--seed", "master seed (decimal or 0x hex); default: random, printed at the start", "seed");
        var count = new Option<long?>("--count") { Description = "total number of cases (over all properties)", HelpName = "n" };
        count.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!long.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n <= 0))
                r.AddError($"--count: '{r.Tokens[0].Value}' is not a positive number");
        });
        var time = Cli.Duration("--time", "time budget: seconds, or like 90s, 10m, 1h (default 60 s unless --count is given)", "--duration");
        var property = new Option<string?>("--property") { Description = $"check only this property ({string.Join(", ", DiffProperties.All.Select(p => p.Name))})", HelpName = "name" };
        var batch = new Option<int>("--batch-size") { Description = "cases per batch (one FsCheck run)", HelpName = "n", DefaultValueFactory = _ => 100 };
        batch.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!int.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n <= 0))
                r.AddError($"--batch-size: '{r.Tokens[0].Value}' is not a positive number");
        });
        var json = Cli.Flag("--json", "print the summary as JSON on stdout");

        var command = new Command("check", "Run a differential campaign: random operation sequences (guest walks, TDP MMU, shadow MMU with cached roots) on spec and impl, compared after every step.");
        foreach (var o in new Option[] { seed, count, time, property, batch, json }) command.Add(o);
        command.SetAction(p =>
        {
            var properties = p.GetValue(property) is { } name ? [Find(name)] : DiffProperties.All;
            ulong master = p.GetValue(seed) ?? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
            long? maxCases = p.GetValue(count);
            TimeSpan? budget = p.GetValue(time) ?? (maxCases is null ? DefaultBudget : null);
            int batchSize = p.GetValue(batch);
            return Run(properties, master, batchSize, maxCases, budget, p.GetValue(json));
        });
        return command;
    }

    static DiffProperty Find(string name)
    {
        try { return DiffProperties.Find(name); }
        catch (ArgumentException e) { throw new InputException($"--property: {Messages.Of(e)}"); }
    }

    static int Run(IReadOnlyList<DiffProperty> properties, ulong seed, int batchSize, long? maxCases, TimeSpan? budget, bool json)
    {
        string limit = string.Join(" or ", new[]
        {
            maxCases is { } n ? $"{n} cases" : null,
            budget is { } b ? $"{b.TotalSeconds:0.#} s" : null,
        }.Where(x => x is not null));
        Console.Error.WriteLine($"mmuspec check: seed {seed}, {limit}, {properties.Count} propert{(properties.Count == 1 ? "y" : "ies")}, batches of {batchSize} cases");

        var campaign = new Campaign(properties, seed, batchSize, maxCases, budget);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; campaign.Stop(); };
        Console.CancelKeyPress += onCancel;
        using var progress = new Timer(_ => Console.Error.WriteLine(Progress(campaign)), null, ProgressEvery, ProgressEvery);
        CampaignResult result;
        try { result = campaign.Run(); }
        finally
        {
            progress.Change(Timeout.Infinite, Timeout.Infinite);
            Console.CancelKeyPress -= onCancel;
        }

        if (json) Console.WriteLine(Json(result, budget, maxCases));
        else
        {
            if (result.FailureReport is { } report)
            {
                Console.WriteLine(report);
                Console.WriteLine();
            }
            Console.WriteLine(Summary(result, budget, maxCases));
        }
        return result.Failed ? Cli.Diverged : Cli.Ok;
    }

    static string Progress(Campaign c)
    {
        double s = Math.Max(c.Elapsed.TotalSeconds, 1e-3);
        long cases = c.Tallies.Sum(t => Interlocked.Read(ref t.Cases));
        long ops = c.Tallies.Sum(t => Interlocked.Read(ref t.Ops));
        string per = string.Join("  ", c.Tallies.Select(t => $"{Short(t.Property.Name)} {Interlocked.Read(ref t.Cases)}"));
        return FormattableString.Invariant($"[{s,6:0.0}s] {cases,8} cases {cases / s,7:0}/s  {ops,9} ops  | {per}");
    }

    static string Short(string name) => name.StartsWith("walk-", StringComparison.Ordinal) ? name[5..] : name;

    static string Summary(CampaignResult r, TimeSpan? budget, long? maxCases)
    {
        double s = Math.Max(r.Elapsed.TotalSeconds, 1e-3);
        var table = new TextTable("property", "cases", "ops", "batches").AlignRight(1, 2, 3);
        foreach (var t in r.Tallies)
            table.Add(t.Property.Name, t.Cases.ToString(CultureInfo.InvariantCulture), t.Ops.ToString(CultureInfo.InvariantCulture), t.Batches.ToString(CultureInfo.InvariantCulture));
        table.Add("total", r.Cases.ToString(CultureInfo.InvariantCulture), r.Ops.ToString(CultureInfo.InvariantCulture), r.Tallies.Sum(t => t.Batches).ToString(CultureInfo.InvariantCulture));
        var lines = new List<string>
        {
            FormattableString.Invariant($"check: {r.Cases} cases, {r.Ops} ops in {s:0.0} s ({r.Cases / s:0} cases/s, {r.Ops / s:0} ops/s), {(r.Failed ? 1 : 0)} failure{(r.Failed ? "" : "s")}{(r.Interrupted ? " (interrupted)" : "")}"),
            table.Render("  "),
        };
        if (r.Failed)
        {
            lines.Add($"FAILED: {r.FailedProperty} diverged in batch {r.FailedBatch} (shrunk with {r.ShrinkRuns} more runs)");
            if (r.FailureReplay is { } token) lines.Add($"replay the case: mmuspec replay {token} --property {r.FailedProperty}");
        }
        else lines.Add("spec and impl agree on every case");
        string again = maxCases is { } n ? $"--count {n}" : budget is { } b ? FormattableString.Invariant($"--time {b.TotalSeconds:0.#}") : "";
        lines.Add($"seed {r.Seed} (rerun: mmuspec check --seed {r.Seed} {again}{(r.Tallies.Count == 1 ? $" --property {r.Tallies[0].Property.Name}" : "")})");
        return string.Join(Environment.NewLine, lines);
    }

    static string Json(CampaignResult r, TimeSpan? budget, long? maxCases)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WalkJson.WriterOptions(indented: true)))
        {
            double s = Math.Max(r.Elapsed.TotalSeconds, 1e-3);
            w.WriteStartObject();
            w.WriteNumber("seed", r.Seed);
            if (budget is { } b) w.WriteNumber("budget_seconds", b.TotalSeconds); else w.WriteNull("budget_seconds");
            if (maxCases is { } n) w.WriteNumber("max_cases", n); else w.WriteNull("max_cases");
            w.WriteNumber("seconds", Math.Round(r.Elapsed.TotalSeconds, 3));
            w.WriteNumber("cases", r.Cases);
            w.WriteNumber("ops", r.Ops);
            w.WriteNumber("cases_per_second", Math.Round(r.Cases / s, 1));
            w.WriteNumber("failures", r.Failed ? 1 : 0);
            w.WriteBoolean("interrupted", r.Interrupted);
            w.WriteStartObject("properties");
            foreach (var t in r.Tallies)
            {
                w.WriteStartObject(t.Property.Name);
                w.WriteNumber("cases", t.Cases);
                w.WriteNumber("ops", t.Ops);
                w.WriteNumber("batches", t.Batches);
                w.WriteEndObject();
            }
            w.WriteEndObject();
            if (r.Failed)
            {
                w.WriteStartObject("failure");
                w.WriteString("property", r.FailedProperty);
                w.WriteNumber("batch", r.FailedBatch);
                w.WriteString("replay", r.FailureReplay);
                w.WriteString("report", r.FailureReport);
                w.WriteEndObject();
            }
            else w.WriteNull("failure");
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
