using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec check</c>: a differential campaign of spec against impl over every property (guest walk, TDP MMU, shadow MMU),
/// reproducible from <c>--seed</c>, within a case count or a time budget (default about 60 s; <c>--deep</c>: 30 min with
/// larger cases), optionally one shard of a campaign split across machines (<c>--shard i/n</c>), optionally with a
/// report of the situations its cases reached (<c>--coverage</c>; docs/coverage.md, docs/ci-tiers.md).
/// </summary>
public static class CheckCommand
{
    static readonly TimeSpan DefaultBudget = TimeSpan.FromSeconds(60);
    /// <summary>The deep tier (nightly CI): a 30-minute budget and cases up to three times the default size.</summary>
    static readonly TimeSpan DeepBudget = TimeSpan.FromMinutes(30);
    public const int DeepEndSize = PropertyCheck.MaxReplaySize;   // a deep failure's token must replay
    static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(2);

    /// <summary>Exit code of <c>--require-coverage</c> when spec and impl agreed but some expected situation was never reached.</summary>
    public const int CoverageIncomplete = 4;
    /// <summary>
    /// Exit code when spec and impl agreed on every case that ran but some property ran none (the budget or
    /// case limit ended first): "agree on every case" would be true of nothing for it. <c>--allow-partial</c> makes it 0.
    /// </summary>
    public const int Partial = 5;
    /// <summary>Exit code of a campaign stopped by SIGINT (Ctrl-C) or SIGTERM: 128 + SIGINT, as shells report it.</summary>
    public const int Interrupted = 130;
    /// <summary>Jobs without <c>--jobs</c>: one per core.</summary>
    static int DefaultJobs => Math.Min(Environment.ProcessorCount, Campaign.MaxJobs);

    public static Command Create()
    {
        var seed = Cli.Number("--seed", "master seed (decimal or 0x hex); default: random, printed at the start", "seed");
        var count = new Option<long?>("--count") { Description = "total number of cases (over all properties, and over all shards with --shard)", HelpName = "n" };
        count.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!long.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n <= 0))
                r.AddError($"--count: '{r.Tokens[0].Value}' is not a positive number");
        });
        var time = Cli.Duration("--time", "time budget, a hard limit on starting batches: seconds, or like 90s, 10m, 1h (default: 60 s, and at least every property's `dotnet test` cases; 30 min with --deep; none with --count)", "--duration");
        var property = new Option<string?>("--property") { Description = $"check only these properties, comma-separated ({string.Join(", ", DiffProperties.All.Select(p => p.Name))})", HelpName = "names" };
        var batch = new Option<int>("--batch-size") { Description = "cases per batch (one FsCheck run)", HelpName = "n", DefaultValueFactory = _ => 100 };
        batch.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!int.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n <= 0))
                r.AddError($"--batch-size: '{r.Tokens[0].Value}' is not a positive number");
        });
        var json = Cli.Flag("--json", "print the summary as JSON on stdout");
        var coverage = Cli.Flag("--coverage", "count the situations the cases reach (guest modes, page sizes, faults, roots...) and print them with those never reached; slower: each case is classified on the spec again");
        var requireCoverage = Cli.Flag("--require-coverage", $"with --coverage: exit {CoverageIncomplete} when spec and impl agree but an expected situation was never reached");
        var deep = Cli.Flag("--deep", $"the deep tier: a {DeepBudget.TotalMinutes:0}-minute budget (unless --time or --count) and cases up to size {DeepEndSize} instead of {Campaign.DefaultEndSize}");
        var allowPartial = Cli.Flag("--allow-partial", $"exit 0, not {Partial}, when the budget or --count ends before every property ran a case (a short smoke run)");
        var shard = new Option<Shard?>("--shard")
        {
            Description = "run only shard i of n (1-based): the batches b with b mod n = i-1, so n machines with the same --seed run disjoint parts of one campaign",
            HelpName = "i/n",
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                if (Shard.TryParse(text, out var s, out string error)) return s;
                r.AddError($"--shard: {error}");
                return null;
            },
        };

        var jobs = new Option<int>("--jobs")
        {
            Description = $"batches run at once, each on its own core (1 to {Campaign.MaxJobs}; default: every core, {DefaultJobs} here); the same cases and the same first failure as one job",
            HelpName = "n",
            DefaultValueFactory = _ => DefaultJobs,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n is >= 1 and <= Campaign.MaxJobs) return n;
                r.AddError($"--jobs: '{text}' is not a number of jobs from 1 to {Campaign.MaxJobs}");
                return 0;
            },
        };

        var command = new Command("check", "Run a differential campaign: random operation sequences (guest walks, TDP MMU, shadow MMU with cached roots) on spec and impl, compared after every step.");
        foreach (var o in new Option[] { seed, count, time, property, batch, json, coverage, requireCoverage, deep, shard, jobs, allowPartial }) command.Add(o);
        command.SetAction(p =>
        {
            var properties = p.GetValue(property) is { } names ? FindAll(names) : DiffProperties.All;
            ulong master = p.GetValue(seed) ?? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
            long? maxCases = p.GetValue(count);
            bool isDeep = p.GetValue(deep);
            TimeSpan? budget = p.GetValue(time) ?? (maxCases is null ? isDeep ? DeepBudget : DefaultBudget : null);
            bool wantCoverage = p.GetValue(coverage);
            if (p.GetValue(requireCoverage) && !wantCoverage) throw new InputException("--require-coverage needs --coverage");
            // Only the default budget waits for every property's `dotnet test` cases: a budget the user gives is theirs.
            bool minimumFirst = p.GetValue(time) is null && maxCases is null;
            var options = new RunOptions(properties, master, p.GetValue(batch), maxCases, budget, p.GetValue(json),
                wantCoverage, p.GetValue(requireCoverage), isDeep, p.GetValue(shard) ?? Shard.Whole, minimumFirst, p.GetValue(allowPartial), p.GetValue(jobs));
            return Run(options);
        });
        return command;
    }

    sealed record RunOptions(IReadOnlyList<DiffProperty> Properties, ulong Seed, int BatchSize, long? MaxCases, TimeSpan? Budget, bool Json,
        bool Coverage, bool RequireCoverage, bool Deep, Shard Shard, bool MinimumFirst, bool AllowPartial, int Jobs)
    {
        public int EndSize => Deep ? DeepEndSize : Campaign.DefaultEndSize;
    }

    /// <summary>"a,b,c": each name once, in the order given (the schedule's order). An empty name (a stray comma) is refused.</summary>
    public static IReadOnlyList<DiffProperty> FindAll(string names)
    {
        var parts = names.Split(',', StringSplitOptions.TrimEntries);
        if (parts.All(n => n.Length == 0)) throw new InputException("--property: no property named");
        if (parts.Any(n => n.Length == 0))
            throw new InputException($"--property: '{names}' has an empty name (a leading, trailing or doubled comma)");
        return [.. parts.Select(Find).Distinct()];
    }

    static DiffProperty Find(string name)
    {
        try { return DiffProperties.Find(name); }
        catch (ArgumentException e) { throw new InputException($"--property: {Messages.Of(e)}"); }
    }

    static int Run(RunOptions o)
    {
        string limit = string.Join(" or ", new[]
        {
            o.MaxCases is { } n ? $"{CaseRuns.Count(n, "case")}{(o.Shard.IsWhole ? "" : " in all shards")}" : null,
            o.Budget is { } b ? FormattableString.Invariant($"{b.TotalSeconds:0.#} s") + (o.MinimumFirst ? " and every property's `dotnet test` cases" : "") : null,
        }.Where(x => x is not null));
        if (BuildInfo.Unoptimized)
            Console.Error.WriteLine("mmuspec: warning: this build runs unoptimized code (about 10x fewer cases per second); build without -p:Optimize=false");
        Console.Error.WriteLine($"mmuspec check: seed {o.Seed}, {limit}, {CaseRuns.Count(o.Properties.Count, "property")}, batches of {CaseRuns.Count(o.BatchSize, "case")}"
            + (o.Deep ? $", deep (sizes up to {o.EndSize})" : "")
            + (o.Shard.IsWhole ? "" : $", shard {o.Shard} (batches {o.Shard.Index - 1}, {o.Shard.Index - 1 + o.Shard.Count}, {o.Shard.Index - 1 + 2 * o.Shard.Count}, ...)")
            + (o.Coverage ? ", coverage on" : "")
            + $", {CaseRuns.Count(o.Jobs, "job")}");

        var tally = o.Coverage ? new CoverageTally() : null;
        var campaign = new Campaign(o.Properties, o.Seed, o.BatchSize, o.MaxCases, o.Budget, o.Shard, o.EndSize,
            tally is null ? null : (p, _, c) => tally.Record(p, c), o.MinimumFirst, o.Jobs);
        // SIGINT (Ctrl-C) and SIGTERM (CI's cancel, `timeout`) stop the campaign and still print what ran; a second
        // signal is not cancelled, so the runtime's default (terminate) applies.
        int signals = 0;
        void OnSignal(PosixSignalContext ctx)
        {
            if (Interlocked.Increment(ref signals) > 1) return;
            ctx.Cancel = true;
            campaign.Stop();
            Console.Error.WriteLine($"mmuspec check: {ctx.Signal} received: stopping (a shrink under way finishes first; signal again to quit at once)");
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var progress = new Timer(_ => Console.Error.WriteLine(Progress(campaign)), null, ProgressEvery, ProgressEvery);
        CampaignResult result;
        try { result = campaign.Run(); }
        finally { progress.Change(Timeout.Infinite, Timeout.Infinite); }

        // Expectations are those of the properties that ran: a shard or a short budget may leave some out (the summary shows them with 0 cases).
        var rows = tally?.Rows(result.Tallies.Where(t => t.Cases > 0).Select(t => t.Property));
        if (o.Json) Console.WriteLine(Json(result, o, tally, rows));
        else
        {
            if (result.FailureReport is { } report)
            {
                Console.WriteLine(report);
                Console.WriteLine();
            }
            if (rows is not null) Console.WriteLine(CoverageTable(rows, tally!, result));
            Console.WriteLine(Summary(result, o));
        }
        var unreached = rows?.Where(r => r.Unreached).ToList() ?? [];
        Console.Out.Flush();
        foreach (var r in unreached) Console.Error.WriteLine($"mmuspec: warning: never reached: {r.Family} / {r.Situation}");
        foreach (var r in rows?.Where(r => !r.Known) ?? []) Console.Error.WriteLine($"mmuspec: warning: a situation no list names (classifier bug): {r.Family} / {r.Situation}");
        if (result.Failed) return Cli.Diverged;
        if (result.Interrupted) return Interrupted;
        if (result.NotRun.Count > 0 && !o.AllowPartial) return Partial;
        return o.RequireCoverage && unreached.Count > 0 ? CoverageIncomplete : Cli.Ok;
    }

    static string Progress(Campaign c)
    {
        double s = Math.Max(c.Elapsed.TotalSeconds, 1e-3);
        long cases = c.Tallies.Sum(t => Interlocked.Read(ref t.Cases));
        long ops = c.Tallies.Sum(t => Interlocked.Read(ref t.Ops));
        string per = string.Join("  ", c.Tallies.Select(t => $"{Short(t.Property.Name)} {Interlocked.Read(ref t.Cases)}"));
        string shard = c.Shard.IsWhole ? "" : $"shard {c.Shard} ";
        return FormattableString.Invariant($"[{s,6:0.0}s] {shard}{cases,8} cases {cases / s,7:0}/s  {ops,9} ops  | {per}");
    }

    static string Short(string name) => name.StartsWith("walk-", StringComparison.Ordinal) ? name[5..] : name;

    static string Summary(CampaignResult r, RunOptions o)
    {
        double s = Math.Max(r.Elapsed.TotalSeconds, 1e-3);
        var table = new TextTable("property", "cases", "ops", "batches", "ops/s").AlignRight(1, 2, 3, 4);
        foreach (var t in r.Tallies)
            table.Add(t.Property.Name, t.Cases.ToString(CultureInfo.InvariantCulture), t.Ops.ToString(CultureInfo.InvariantCulture), t.Batches.ToString(CultureInfo.InvariantCulture),
                t.Cases == 0 ? "" : t.OpsPerSecond.ToString("0", CultureInfo.InvariantCulture));
        table.Add("total", r.Cases.ToString(CultureInfo.InvariantCulture), r.Ops.ToString(CultureInfo.InvariantCulture), r.Tallies.Sum(t => t.Batches).ToString(CultureInfo.InvariantCulture),
            r.OpsPerJobSecond.ToString("0", CultureInfo.InvariantCulture));
        string shard = o.Shard.IsWhole ? "" : $" (shard {o.Shard})";
        var lines = new List<string>
        {
            FormattableString.Invariant($"check{shard}: {CaseRuns.Count(r.Cases, "case")}, {CaseRuns.Count(r.Ops, "op")} in {s:0.0} s ({r.Cases / s:0} cases/s, {r.Ops / s:0} ops/s; {CaseRuns.Count(r.Jobs, "job")}, {r.OpsPerCpuSecond:0} ops per CPU-second), {CaseRuns.Count(r.Failed ? 1 : 0, "failure")}{(r.Interrupted ? " (interrupted)" : "")}"),
            table.Render("  "),
        };
        var notRun = r.NotRun.Select(p => p.Name).ToList();
        var shortOf = r.BelowTestCases.Select(t => FormattableString.Invariant($"{t.Property.Name} {t.Cases}/{t.Property.TestCases}")).ToList();
        if (r.Failed)
        {
            lines.Add($"FAILED: {r.FailedProperty} diverged in batch {r.FailedBatch} (shrunk with {r.ShrinkRuns} more runs)");
            if (r.FoundAfter is { } found)
                lines.Add(FormattableString.Invariant($"found after {found.TotalSeconds:0.0} s; shrunk to {CaseRuns.Count(r.ShrunkOps ?? 0, "op")}"));
            if (r.CounterexampleFile is { } file) lines.Add($"counterexample file: {file}  (rerun it: mmuspec replay {file}; shrink further: mmuspec replay {file} --shrink)");
            if (r.FailureReplay is { } token) lines.Add($"replay the unshrunk case: mmuspec replay {token} --property {r.FailedProperty}");
        }
        else if (r.Interrupted)
        {
            lines.Add($"INTERRUPTED: spec and impl agree on the {CaseRuns.Count(r.Cases, "case")} that ran, but the campaign did not finish");
            if (notRun.Count > 0) lines.Add($"properties that ran no case: {string.Join(", ", notRun)}");
        }
        else if (notRun.Count > 0)
            lines.Add($"{(o.AllowPartial ? "PARTIAL (allowed)" : "PARTIAL")}: spec and impl agree on every case that ran, but {CaseRuns.Count(notRun.Count, "property")} ran no case "
                + $"before the {(o.MaxCases is null ? "time budget" : "case limit")} ended: {string.Join(", ", notRun)} (give more --time or --count{(o.AllowPartial ? "" : ", or --allow-partial")})");
        else lines.Add("spec and impl agree on every case");
        if (!r.Failed && shortOf.Count > 0)
            lines.Add($"fewer cases than `dotnet test` runs (ran/dotnet test): {string.Join(", ", shortOf)}");
        lines.Add($"seed {r.Seed} (rerun: {Rerun(r, o)})");
        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>The command that runs the same campaign again: every option that decides which cases run.</summary>
    static string Rerun(CampaignResult r, RunOptions o)
    {
        var parts = new List<string> { $"mmuspec check --seed {r.Seed}" };
        if (o.MaxCases is { } n) parts.Add($"--count {n}");
        else if (o.Budget is { } b && !o.MinimumFirst && !(o.Deep && b == DeepBudget)) parts.Add(FormattableString.Invariant($"--time {b.TotalSeconds:0.#}"));
        if (o.Deep) parts.Add("--deep");
        if (o.BatchSize != 100) parts.Add($"--batch-size {o.BatchSize}");
        if (r.Tallies.Count < DiffProperties.All.Count) parts.Add($"--property {string.Join(',', r.Tallies.Select(t => t.Property.Name))}");
        if (!o.Shard.IsWhole) parts.Add($"--shard {o.Shard}");
        if (o.Coverage) parts.Add(o.RequireCoverage ? "--coverage --require-coverage" : "--coverage");
        return string.Join(' ', parts);
    }

    /// <summary>The coverage report: per family and group, each situation's count, never-reached ones marked.</summary>
    static string CoverageTable(IReadOnlyList<CoverageRow> rows, CoverageTally tally, CampaignResult r)
    {
        int expected = rows.Count(x => x.Expected), unreached = rows.Count(x => x.Unreached);
        double total = Math.Max(r.Elapsed.TotalSeconds, 1e-3);
        var lines = new List<string>
        {
            FormattableString.Invariant($"coverage: {expected - unreached} of {expected} expected situations reached ({unreached} never), classifying {CaseRuns.Count(tally.Cases, "case")} took {tally.Elapsed.TotalSeconds:0.0} s of {total:0.0} s ({100 * tally.Elapsed.TotalSeconds / total:0}%)"),
        };
        var notRun = r.Tallies.Where(t => t.Cases == 0).Select(t => t.Property.Name).ToList();
        if (notRun.Count > 0) lines.Add($"  not run in this campaign (their situations are not expected): {string.Join(", ", notRun)}");
        foreach (var family in rows.GroupBy(x => x.Family))
        {
            lines.Add($"  {family.Key}");
            var table = new TextTable().AlignRight(1);   // situation, count, remark
            string? group = null;
            foreach (var row in family)
            {
                if (row.Group != group)
                {
                    group = row.Group;
                    table.Add($"    {group}");
                }
                string mark = row.Unreached ? "<-- never reached" : !row.Known ? "(no list names it)" : !row.Expected ? "(extra: counted, not required)" : "";
                table.Add($"      {Situation.NameOf(row.Situation)}", row.Count.ToString(CultureInfo.InvariantCulture), mark);
            }
            lines.Add(table.Render());
        }
        return string.Join(Environment.NewLine, lines) + Environment.NewLine;
    }

    static string Json(CampaignResult r, RunOptions o, CoverageTally? tally, IReadOnlyList<CoverageRow>? rows)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WalkJson.WriterOptions(indented: true)))
        {
            double s = Math.Max(r.Elapsed.TotalSeconds, 1e-3);
            w.WriteStartObject();
            w.WriteNumber("seed", r.Seed);
            if (o.Budget is { } b) w.WriteNumber("budget_seconds", b.TotalSeconds); else w.WriteNull("budget_seconds");
            if (o.MaxCases is { } n) w.WriteNumber("max_cases", n); else w.WriteNull("max_cases");
            w.WriteBoolean("deep", o.Deep);
            w.WriteNumber("end_size", o.EndSize);
            if (o.Shard.IsWhole) w.WriteNull("shard");
            else
            {
                w.WriteStartObject("shard");
                w.WriteNumber("index", o.Shard.Index);
                w.WriteNumber("count", o.Shard.Count);
                w.WriteEndObject();
            }
            w.WriteNumber("seconds", Math.Round(r.Elapsed.TotalSeconds, 3));
            w.WriteNumber("cases", r.Cases);
            w.WriteNumber("ops", r.Ops);
            w.WriteNumber("cases_per_second", Math.Round(r.Cases / s, 1));
            w.WriteNumber("ops_per_second", Math.Round(r.Ops / s, 1));
            w.WriteNumber("jobs", r.Jobs);
            w.WriteNumber("cpu_seconds", Math.Round(r.CpuTime.TotalSeconds, 3));
            w.WriteNumber("ops_per_cpu_second", Math.Round(r.OpsPerCpuSecond, 1));
            // Coyote schedules the concurrent property explored (shrinking included): 0 when it did not run.
            w.WriteNumber("schedules", Harness.Concurrency.ScheduleExploration.SchedulesExplored);
            w.WriteNumber("failures", r.Failed ? 1 : 0);
            w.WriteBoolean("interrupted", r.Interrupted);
            w.WriteStartArray("not_run");
            foreach (var p in r.NotRun) w.WriteStringValue(p.Name);
            w.WriteEndArray();
            w.WriteStartObject("properties");
            foreach (var t in r.Tallies)
            {
                w.WriteStartObject(t.Property.Name);
                w.WriteNumber("cases", t.Cases);
                w.WriteNumber("ops", t.Ops);
                w.WriteNumber("batches", t.Batches);
                w.WriteNumber("test_cases", t.Property.TestCases);
                w.WriteNumber("seconds", Math.Round(t.Busy.TotalSeconds, 3));
                w.WriteNumber("ops_per_second", Math.Round(t.OpsPerSecond, 1));
                w.WriteEndObject();
            }
            w.WriteEndObject();
            if (r.Failed)
            {
                w.WriteStartObject("failure");
                w.WriteString("property", r.FailedProperty);
                w.WriteNumber("batch", r.FailedBatch);
                w.WriteString("replay", r.FailureReplay);
                if (r.FoundAfter is { } found) w.WriteNumber("found_after_seconds", Math.Round(found.TotalSeconds, 3)); else w.WriteNull("found_after_seconds");
                if (r.ShrunkOps is { } ops) w.WriteNumber("shrunk_ops", ops); else w.WriteNull("shrunk_ops");
                w.WriteString("counterexample", r.CounterexampleFile);
                w.WriteString("report", r.FailureReport);
                w.WriteEndObject();
            }
            else w.WriteNull("failure");
            if (tally is null || rows is null) w.WriteNull("coverage");
            else
            {
                w.WriteStartObject("coverage");
                w.WriteNumber("classify_seconds", Math.Round(tally.Elapsed.TotalSeconds, 3));
                w.WriteNumber("expected", rows.Count(x => x.Expected));
                w.WriteStartArray("not_run");
                foreach (var t in r.Tallies.Where(t => t.Cases == 0)) w.WriteStringValue(t.Property.Name);
                w.WriteEndArray();
                w.WriteStartArray("unreached");
                foreach (var row in rows.Where(x => x.Unreached)) w.WriteStringValue($"{row.Family}: {row.Situation}");
                w.WriteEndArray();
                w.WriteStartObject("families");
                foreach (var family in rows.GroupBy(x => x.Family))
                {
                    // expected: every situation the properties that ran expect, 0 when never reached; extra: others reached.
                    w.WriteStartObject(family.Key);
                    w.WriteStartObject("expected");
                    foreach (var row in family.Where(x => x.Expected)) w.WriteNumber(row.Situation, row.Count);
                    w.WriteEndObject();
                    w.WriteStartObject("extra");
                    foreach (var row in family.Where(x => !x.Expected)) w.WriteNumber(row.Situation, row.Count);
                    w.WriteEndObject();
                    w.WriteEndObject();
                }
                w.WriteEndObject();
                w.WriteStartObject("properties");
                foreach (var t in r.Tallies)
                {
                    w.WriteStartObject(t.Property.Name);
                    foreach (var (situation, count) in tally.Of(t.Property).OrderBy(x => x.Key, StringComparer.Ordinal)) w.WriteNumber(situation, count);
                    w.WriteEndObject();
                }
                w.WriteEndObject();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }
}
