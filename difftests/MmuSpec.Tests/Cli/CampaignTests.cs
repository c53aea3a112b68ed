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

    /// <summary>Each case a campaign runs, as (property, batch, the case printed).</summary>
    static List<(string Property, long Batch, string Case)> CasesOf(Shard shard, long maxCases, int batchSize = 7)
    {
        var cases = new List<(string, long, string)>();
        var result = new Campaign(FastProperties, seed: 20261121, batchSize, maxCases, budget: null, shard,
            onCase: (p, batch, c) => cases.Add((p.Name, batch, c.ToString()!))).Run();
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
