using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Harness.Running;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// `mmuspec check`'s campaign (docs/ci-tiers.md): shards split one campaign into disjoint parts that
/// together run exactly its batches, the shard option's validation, the batch plan under a case
/// limit, and the deep tier's larger sizes replaying from their tokens.
/// </summary>
public sealed class CampaignTests
{
    [Fact]
    public void Every_batch_belongs_to_exactly_one_shard()
    {
        for (int n = 1; n <= 7; n++)
        {
            var shards = Enumerable.Range(1, n).Select(i => new Shard(i, n)).ToList();
            for (long batch = 0; batch < 500; batch++)
            {
                var owners = shards.Where(s => s.Runs(batch)).ToList();
                Assert.True(owners.Count == 1, $"batch {batch} with {n} shards belongs to {owners.Count} shards");
                Assert.Equal((int)(batch % n) + 1, owners[0].Index);
            }
            foreach (var s in shards)
                for (long from = 0; from < 50; from++)
                {
                    long next = s.NextBatch(from);
                    Assert.True(next >= from && next < from + n && s.Runs(next), $"shard {s}: NextBatch({from}) = {next}");
                }
        }
        Assert.True(Shard.Whole.IsWhole);
        Assert.True(Enumerable.Range(0, 100).All(b => Shard.Whole.Runs(b)));
    }

    [Theory]
    [InlineData("1/1", 1, 1)]
    [InlineData("2/4", 2, 4)]
    [InlineData("4/4", 4, 4)]
    [InlineData("12/16", 12, 16)]
    public void A_shard_is_written_i_slash_n(string text, int index, int count)
    {
        Assert.True(Shard.TryParse(text, out var shard, out string error), error);
        Assert.Equal(new Shard(index, count), shard);
        Assert.Equal(text, shard.ToString());
    }

    [Theory]
    [InlineData("0/3", "between 1 and 3")]
    [InlineData("4/3", "between 1 and 3")]
    [InlineData("1/0", "at least 1")]
    [InlineData("0/0", "at least 1")]
    [InlineData("2", "is not i/n")]
    [InlineData("a/b", "is not i/n")]
    [InlineData("1/2/3", "is not i/n")]
    [InlineData("-1/2", "is not i/n")]
    [InlineData("1 /2", "is not i/n")]
    [InlineData("", "is not i/n")]
    public void A_bad_shard_is_refused_with_a_message_that_says_why(string text, string expected)
    {
        Assert.False(Shard.TryParse(text, out _, out string error));
        Assert.Contains(expected, error);
        Assert.Contains($"'{text}'", error);
    }

    [Fact]
    public void A_case_limit_fills_whole_batches_then_one_partial_batch()
    {
        Assert.Equal([10, 10, 10, 5, 0, 0], Enumerable.Range(0, 6).Select(b => Campaign.BatchCases(b, 10, 35)));
        Assert.Equal([10, 10, 0], Enumerable.Range(0, 3).Select(b => Campaign.BatchCases(b, 10, 20)));
        Assert.Equal(100, Campaign.BatchCases(1_000_000, 100, null));
    }

    static readonly DiffProperty[] FastProperties = [DiffProperties.Find("walk-bits32"), DiffProperties.Find("walk-pae"), DiffProperties.Find("walk-long4")];

    /// <summary>The cases a campaign ran, each as its JSON (a case record's ToString prints its op lists as type names only).</summary>
    static List<(string Property, long Batch, string Case)> CasesOf(Shard shard, long maxCases, int batchSize = 7)
    {
        var cases = new List<(string, long, string)>();
        var result = new Campaign(FastProperties, seed: 20261121, batchSize, maxCases, budget: null, shard,
            onCase: (p, batch, c) => cases.Add((p.Name, batch, CaseJson.ToJson(c)))).Run();
        Assert.False(result.Failed, result.FailureReport);
        Assert.Equal(cases.Count, result.Cases);
        return cases;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]   // as many shards as properties: each shard runs one property
    [InlineData(4)]
    public void Shards_with_one_seed_run_disjoint_batches_that_together_are_the_whole_campaign(int n)
    {
        const long MaxCases = 100;   // 14 batches of 7 and one of 2
        var whole = CasesOf(Shard.Whole, MaxCases);
        Assert.Equal(MaxCases, whole.Count);
        var parts = Enumerable.Range(1, n).Select(i => CasesOf(new Shard(i, n), MaxCases)).ToList();

        for (int i = 0; i < n; i++)
            Assert.All(parts[i], c => Assert.Equal(i, (int)(c.Batch % n)));   // shard i+1 runs only its batches
        var batchesPerShard = parts.Select(p => p.Select(c => c.Batch).ToHashSet()).ToList();
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                Assert.Empty(batchesPerShard[i].Intersect(batchesPerShard[j]));
        // Together: the same cases, batch for batch, as one machine running the whole campaign.
        Assert.Equal(whole.OrderBy(c => c.Batch).ToList(), parts.SelectMany(p => p).OrderBy(c => c.Batch).ToList());
    }

    [Fact]
    public void A_deep_failure_found_beyond_the_default_size_replays_from_its_token()
    {
        // A property over the size itself that fails only beyond the default EndSize (100).
        var sized = new DiffProperty<int>("sized", "fails_beyond_size_150", Arb.From(Gen.Sized(s => Gen.Constant(s))),
            holds: s => s < 150, explain: s => $"size {s}", opCount: _ => 1, family: DiffProperties.WalkFamily,
            situations: [], classify: (_, _) => { });
        var quick = new Campaign([sized], seed: 1, batchSize: 100, maxCases: 300, budget: null).Run();
        Assert.False(quick.Failed, "sizes stay at or below 100 by default");

        var deep = new Campaign([sized], seed: 1, batchSize: 100, maxCases: 300, budget: null, endSize: 300).Run();
        Assert.True(deep.Failed, "sizes ramp to 300 in the deep tier");
        Assert.NotNull(deep.FailureReplay);
        int size = int.Parse(deep.FailureReplay!.Split(',')[2], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(size >= 150, $"the token {deep.FailureReplay} carries the failing size");

        var replayed = PropertyCheck.Check("sized", sized, _ => { }, maxTest: 100, PropertyCheck.ParseReplay(deep.FailureReplay), throwOnFailure: false);
        Assert.Equal(1, replayed.TestsRun);
        Assert.Contains($"size {size}", replayed.FailureReport);
    }
}

/// <summary>
/// The campaign's schedule and how it ends: every property first gets the cases `dotnet test` gives it
/// (in rounds, every property in the first), an interruption stops at once and says what ran, and a
/// budget never hides a property that ran no case.
/// </summary>
public sealed class CampaignScheduleTests
{
    /// <summary>A trivial property with its own `dotnet test` count; its cases are sizes.</summary>
    static DiffProperty<int> Trivial(string name, int testCases, Func<int, bool>? holds = null) =>
        new(name, "holds_" + name, Arb.From(Gen.Sized(s => Gen.Constant(s))), holds ?? (_ => true), s => $"size {s}", _ => 1,
            DiffProperties.WalkFamily, [], (_, _) => { }, testCases);

    static DiffProperty<int> Slow(string name, int testCases) =>
        new(name, "holds_" + name, Arb.From(Gen.Sized(s => Gen.Constant(s))), _ => true, s => $"size {s}", _ => 1,
            DiffProperties.WalkFamily, [], (_, _) => { }, testCases) { MaxBatchCases = 1 };

    [Fact]
    public void The_schedule_gives_every_property_its_test_cases_first_then_goes_round_robin()
    {
        DiffProperty[] ps = [Trivial("a", 30), Trivial("b", 10), Trivial("c", 25)];
        var campaign = new Campaign(ps, seed: 1, batchSize: 10, maxCases: null, budget: null);
        // Needs: a 3 batches, b 1, c 3. Round 0 holds every property; then only those still short.
        Assert.Equal(7, campaign.MinimumBatches);
        Assert.Equal([0, 1, 2, 0, 2, 0, 2, /* round-robin */ 0, 1, 2, 0], Enumerable.Range(0, 11).Select(b => campaign.PropertyOf(b)));
    }

    /// <summary>
    /// A property whose batches hold fewer cases (the concurrent one, <see cref="DiffProperty.MaxBatchCases"/>) gets
    /// more batches to reach its `dotnet test` cases, and a case limit still runs exactly that many cases: the
    /// limit counts what the batches before really held, not batch x batch size.
    /// </summary>
    [Fact]
    public void A_property_with_small_batches_gets_more_of_them_and_a_case_limit_still_runs_every_case()
    {
        DiffProperty[] ps = [Trivial("a", 20), Slow("slow", 4)];
        var plan = new Campaign(ps, seed: 1, batchSize: 10, maxCases: null, budget: null);
        // a needs 2 batches of 10, slow 4 batches of 1: rounds [a, slow], [a, slow], [slow], [slow].
        Assert.Equal(6, plan.MinimumBatches);
        Assert.Equal([0, 1, 0, 1, 1, 1], Enumerable.Range(0, 6).Select(b => plan.PropertyOf(b)));
        var r = new Campaign(ps, seed: 1, batchSize: 10, maxCases: 25, budget: null).Run();
        // Batches: a 10, slow 1, a 10, slow 1, slow 1, slow 1 (24), then a: the last 1 of 25.
        Assert.Equal(25, r.Cases);
        Assert.Equal([21L, 4L], r.Tallies.Select(t => t.Cases));
    }

    [Fact]
    public void The_default_budget_waits_for_every_propertys_test_cases_and_a_given_budget_does_not()
    {
        DiffProperty[] ps = [Trivial("a", 40), Trivial("b", 20)];
        var waited = new Campaign(ps, seed: 1, batchSize: 10, maxCases: null, budget: TimeSpan.Zero, minimumFirst: true).Run();
        Assert.Equal([40L, 20L], waited.Tallies.Select(t => t.Cases));
        Assert.Empty(waited.NotRun);
        Assert.Empty(waited.BelowTestCases);

        var hard = new Campaign(ps, seed: 1, batchSize: 10, maxCases: null, budget: TimeSpan.Zero).Run();
        Assert.Equal([0L, 0L], hard.Tallies.Select(t => t.Cases));
        Assert.Equal(["a", "b"], hard.NotRun.Select(p => p.Name));
        Assert.False(hard.Interrupted);
    }

    [Fact]
    public void A_real_property_gets_its_dotnet_test_cases_from_the_default_campaign()
    {
        var p = DiffProperties.Find("walk-pae");
        var r = new Campaign([p], seed: 7, batchSize: 100, maxCases: null, budget: TimeSpan.Zero, minimumFirst: true).Run();
        Assert.False(r.Failed, r.FailureReport);
        Assert.Equal(p.TestCases, r.Tallies[0].Cases);
        Assert.Equal(DiffProperties.WalkTestCases, p.TestCases);
    }

    [Fact]
    public void An_interrupted_campaign_stops_within_the_batch_and_counts_only_the_cases_that_ran()
    {
        Campaign? campaign = null;
        int seen = 0;
        var a = Trivial("a", 100, _ => { if (++seen == 5) campaign!.Stop(); return true; });
        campaign = new Campaign([a, Trivial("b", 100)], seed: 1, batchSize: 100, maxCases: null, budget: null);
        var r = campaign.Run();
        Assert.True(r.Interrupted);
        Assert.False(r.Failed);
        Assert.Equal(5, r.Tallies[0].Cases);             // the case that asked to stop ran; no later one did
        Assert.Equal(0, r.Tallies[0].Batches);           // an interrupted batch is not a whole one
        Assert.Equal(["b"], r.NotRun.Select(p => p.Name));
    }

    [Fact]
    public void A_failure_is_still_found_and_shrunk_when_it_comes_first()
    {
        var a = Trivial("a", 100, s => s < 20);
        var r = new Campaign([a, Trivial("b", 100)], seed: 1, batchSize: 100, maxCases: null, budget: null).Run();
        Assert.True(r.Failed);
        Assert.Equal("a", r.FailedProperty);
        Assert.Contains("size 20", r.FailureReport);   // shrunk to the smallest failing size
    }
}
