using System.Text.Json.Nodes;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Cli.Commands;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Walk;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// `mmuspec check --jobs N` (docs/cli.md): batches run at once give the result of one job running them in
/// order: the same cases counted in the same order, the same first failure (the lowest failing batch, even
/// when a later one fails first), the same summary. No test waits on time: where the order of events
/// matters, the properties themselves hold a batch back until another has run.
/// </summary>
public sealed class ParallelCampaignTests
{
    static readonly DiffProperty[] FastProperties = [DiffProperties.Find("walk-bits32"), DiffProperties.Find("walk-pae"), DiffProperties.Find("walk-long4")];

    /// <summary>Each case a campaign counts, as (property, batch, the case as JSON), in the order it counted them.</summary>
    static (CampaignResult Result, List<(string Property, long Batch, string Case)> Cases) Run(
        IReadOnlyList<DiffProperty> properties, int jobs, long maxCases, int batchSize, Shard? shard = null)
    {
        var cases = new List<(string, long, string)>();
        var result = new Campaign(properties, seed: 20261121, batchSize, maxCases, budget: null, shard,
            onCase: (p, batch, c) => cases.Add((p.Name, batch, c is WalkCase ? CaseJson.ToJson(c) : c.ToString()!)), jobs: jobs).Run();
        return (result, cases);
    }

    static string Counts(CampaignResult r) =>
        string.Join("; ", r.Tallies.Select(t => $"{t.Property.Name} {t.Cases} cases {t.Ops} ops {t.Batches} batches")) + $"; {r.ShrinkRuns} shrink runs";

    [Theory]
    [InlineData(2, 1)]
    [InlineData(4, 1)]
    [InlineData(3, 2)]   // one shard of two, three jobs
    public void Jobs_count_the_same_cases_in_the_same_order_as_one_job(int jobs, int shards)
    {
        var shard = new Shard(1, shards);
        var (serial, serialCases) = Run(FastProperties, jobs: 1, maxCases: 150, batchSize: 7, shard);
        var (parallel, parallelCases) = Run(FastProperties, jobs, maxCases: 150, batchSize: 7, shard);
        Assert.False(serial.Failed, serial.FailureReport);
        Assert.InRange(serialCases.Count, 150 / shards - 7, 150 / shards + 7);
        Assert.Equal(serialCases, parallelCases);
        Assert.Equal(Counts(serial), Counts(parallel));
        Assert.Equal(jobs, parallel.Jobs);
        Assert.False(parallel.Failed || parallel.Interrupted);
    }

    /// <summary>
    /// A walk property with a planted bug: it fails on the cases with the CR3 and controls of one case drawn in
    /// a later batch and at least 3 ops, so a failure appears there and shrinks down to 3 ops, as a mutant's would.
    /// </summary>
    static DiffProperty Planted(WalkCase target) =>
        new DiffProperty<WalkCase>("walk-planted", "fails_on_one_later_case", CaseRules.Shrinking(WalkGen.Arbitrary(target.Controls.Mode)),
            c => Families.Walk.Run(c).Agreed && !(c.Cr3 == target.Cr3 && c.Controls.Equals(target.Controls) && c.Ops.Length >= 3),
            c => Families.Walk.Run(c).Render(), c => c.Ops.Length, DiffProperties.WalkFamily, [], (_, _) => { });

    [Fact]
    public void A_planted_bug_is_reported_alike_by_one_job_and_by_four()
    {
        var walkPae = DiffProperties.Find("walk-pae");
        var (_, drawn) = Run([walkPae], jobs: 1, maxCases: 200, batchSize: 20);
        var target = (WalkCase)CaseJson.Parse(drawn.First(c => c.Batch == 6 && CaseJson.Parse(c.Case) is WalkCase { Ops.Length: >= 3 }).Case);
        var planted = Planted(target);

        var (serial, serialCases) = Run([planted], jobs: 1, maxCases: 200, batchSize: 20);
        var (parallel, parallelCases) = Run([planted], jobs: 4, maxCases: 200, batchSize: 20);
        Assert.True(serial.Failed);
        Assert.Equal(6, serial.FailedBatch);
        Assert.Equal(3, serial.ShrunkOps);
        Assert.Equal((serial.FailedProperty, serial.FailedBatch, serial.FailureReplay, serial.ShrunkOps), (parallel.FailedProperty, parallel.FailedBatch, parallel.FailureReplay, parallel.ShrunkOps));
        Assert.Equal(Counts(serial), Counts(parallel));
        Assert.Equal(serialCases, parallelCases);
        // The reports differ only in the counterexample file's name (it holds the time it was written).
        Assert.Equal(WithoutFile(serial), WithoutFile(parallel));
    }

    static string WithoutFile(CampaignResult r) =>
        string.Join('\n', r.FailureReport!.Split('\n').Where(l => r.CounterexampleFile is not { } f || !l.Contains(f, StringComparison.Ordinal)));

    [Fact]
    public void The_lowest_failing_batch_wins_even_when_a_later_batch_fails_first()
    {
        // One property, batches of 10 values: find a value drawn in batch 5 and one in batch 9.
        static DiffProperty<int> Values(Func<int, bool> holds, Func<int, IEnumerable<int>> shrink) =>
            new("values", "fails_on_two_values", Arb.From(Gen.Choose(0, int.MaxValue), shrink), holds, v => $"value {v}", _ => 1,
                DiffProperties.WalkFamily, [], (_, _) => { }, testCases: 10);
        var (_, drawn) = Run([Values(_ => true, _ => [])], jobs: 1, maxCases: 200, batchSize: 10);
        int fifth = int.Parse(drawn.Where(c => c.Batch == 5).ElementAt(3).Case, System.Globalization.CultureInfo.InvariantCulture);
        int ninth = int.Parse(drawn.Where(c => c.Batch == 9).ElementAt(1).Case, System.Globalization.CultureInfo.InvariantCulture);
        Assert.Single(drawn, c => c.Case == fifth.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Single(drawn, c => c.Case == ninth.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.DoesNotContain(drawn, c => c.Case == (ninth / 2).ToString(System.Globalization.CultureInfo.InvariantCulture));

        CampaignResult Campaign(int jobs, out List<(string, long, string)> cases, out bool ninthShrunk, out bool ninthFailedFirst)
        {
            using var ninthRan = new ManualResetEventSlim();
            bool shrunk = false, first = true;
            // With several jobs, batch 5's failing value waits until batch 9 has drawn its own: the later failure comes first.
            // A shrink of batch 9's value would try half of it (FsCheck builds the candidates of every value drawn, but
            // tries them only for a failing one).
            var p = Values(v =>
                {
                    if (v == ninth) ninthRan.Set();
                    if (v == fifth && jobs > 1) first = ninthRan.Wait(TimeSpan.FromMinutes(2));   // a guard against a hang, not a timing
                    if (v == ninth / 2) shrunk = true;
                    return v != fifth && v != ninth;
                },
                v => v > 1 ? [v / 2] : []);
            var result = Run([p], jobs, maxCases: 200, batchSize: 10);
            (cases, ninthShrunk, ninthFailedFirst) = (result.Cases, shrunk, first && ninthRan.IsSet);
            return result.Result;
        }

        var serial = Campaign(1, out var serialCases, out bool serialShrunkNinth, out _);
        var parallel = Campaign(4, out var parallelCases, out bool parallelShrunkNinth, out bool ninthFirst);
        Assert.True(ninthFirst, "batch 9 drew its failing value while batch 5 was still running");
        Assert.False(serialShrunkNinth || parallelShrunkNinth, "batch 9's failure is never shrunk: a serial run stops at batch 5");
        Assert.Equal(5, serial.FailedBatch);
        Assert.True(serial.ShrinkRuns > 0, "batch 5's value was shrunk");
        Assert.Equal(serial.FailedBatch, parallel.FailedBatch);
        Assert.Equal(serial.FailureReplay, parallel.FailureReplay);
        Assert.Equal(serial.FailureReport, parallel.FailureReport);
        Assert.Equal(Counts(serial), Counts(parallel));
        Assert.Equal(serialCases, parallelCases);
        Assert.Equal(6 * 10 - 6, serialCases.Count);   // batches 0-4 whole, batch 5 up to its failing value
    }

    [Fact]
    public void An_interrupted_parallel_campaign_stops_every_job_and_counts_what_ran()
    {
        Campaign? campaign = null;
        int seen = 0, seenAtStop = 0;
        var a = new DiffProperty<int>("a", "holds_a", Arb.From(Gen.Sized(s => Gen.Constant(s))), _ =>
            {
                if (Interlocked.Increment(ref seen) == 5)
                {
                    campaign!.Stop();
                    seenAtStop = Volatile.Read(ref seen);
                }
                return true;
            },
            s => $"size {s}", _ => 1, DiffProperties.WalkFamily, [], (_, _) => { }, testCases: 100);
        campaign = new Campaign([a], seed: 1, batchSize: 100, maxCases: null, budget: null, jobs: 4);
        var r = campaign.Run();   // no budget and no case limit: only the stop ends it
        Assert.True(r.Interrupted);
        Assert.False(r.Failed);
        // Every case that ran is counted. The case that asked to stop ran, and so did the cases other jobs ran before
        // the stop landed (on a loaded machine the asking thread can be descheduled between its case and Stop); after
        // it, each of the other three jobs finishes at most the case it had begun.
        Assert.Equal(Volatile.Read(ref seen), r.Tallies[0].Cases);
        Assert.InRange(r.Tallies[0].Cases, 5, seenAtStop + 3);
        Assert.Equal(0, r.Tallies[0].Batches);   // no batch of 100 was whole
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(Campaign.MaxJobs + 1)]
    public void A_number_of_jobs_out_of_range_is_refused(int jobs)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new Campaign(FastProperties, seed: 1, batchSize: 10, maxCases: 10, budget: null, jobs: jobs));
        Assert.Equal("jobs", e.ParamName);
    }

    /// <summary>The JSON summary without what depends on time or on the number of jobs.</summary>
    static string Timeless(string json)
    {
        var root = JsonNode.Parse(json)!.AsObject();
        foreach (string f in new[] { "seconds", "cases_per_second", "ops_per_second", "jobs", "cpu_seconds", "ops_per_cpu_second" }) Assert.True(root.Remove(f), f);
        foreach (var (_, p) in root["properties"]!.AsObject())
            foreach (string f in new[] { "seconds", "ops_per_second" }) Assert.True(p!.AsObject().Remove(f), f);
        if (root["coverage"] is JsonObject coverage) Assert.True(coverage.Remove("classify_seconds"));
        return root.ToJsonString();
    }

    [Fact]
    public void Check_prints_the_same_json_with_one_job_and_with_three()
    {
        string[] args = ["check", "--seed", "20261121", "--count", "90", "--batch-size", "10", "--property", "walk-pae,tdp-ept,walk-long5", "--json"];
        var one = MmuspecProcess.Run([.. args, "--jobs", "1"]);
        var three = MmuspecProcess.Run([.. args, "--jobs", "3"]);
        Assert.Equal(0, one.ExitCode);
        Assert.Equal(0, three.ExitCode);
        Assert.Equal(1, JsonNode.Parse(one.Stdout)!["jobs"]!.GetValue<int>());
        Assert.Equal(3, JsonNode.Parse(three.Stdout)!["jobs"]!.GetValue<int>());
        Assert.Contains("3 jobs", three.Stderr);
        Assert.Equal(Timeless(one.Stdout), Timeless(three.Stdout));
        Assert.True(JsonNode.Parse(three.Stdout)!["properties"]!["tdp-ept"]!["ops_per_second"]!.GetValue<double>() > 0);
        Assert.True(JsonNode.Parse(three.Stdout)!["ops_per_cpu_second"]!.GetValue<double>() > 0);
    }

    [Fact]
    public void Coverage_counts_and_the_exit_codes_for_it_and_for_a_partial_run_are_those_of_one_job()
    {
        string[] args = ["check", "--seed", "3", "--count", "40", "--batch-size", "10", "--property", "walk-pae,walk-long4", "--coverage", "--require-coverage", "--json"];
        var one = MmuspecProcess.Run([.. args, "--jobs", "1"]);
        var two = MmuspecProcess.Run([.. args, "--jobs", "2"]);
        Assert.Equal(CheckCommand.CoverageIncomplete, one.ExitCode);   // 40 walk cases leave some situation unreached
        Assert.Equal(CheckCommand.CoverageIncomplete, two.ExitCode);
        Assert.Equal(Timeless(one.Stdout), Timeless(two.Stdout));

        var partial = MmuspecProcess.Run("check", "--seed", "1", "--time", "0.001", "--property", "walk-pae,walk-long4", "--jobs", "2");
        Assert.Equal(CheckCommand.Partial, partial.ExitCode);
        Assert.Contains("PARTIAL", partial.Stdout);
    }
}
