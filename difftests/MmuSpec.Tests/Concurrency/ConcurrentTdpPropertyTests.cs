using System.Diagnostics;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Running;
using MmuSpec.Spec.Tdp;
using MmuSpec.Tests.Differential;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// The concurrent TDP property (`tdp-concurrent`) the campaign runs: generated programs of two or three vCPU
/// threads explored under Coyote (PCT, then random), each history judged against the spec with the final
/// state and the table pages; its cases, schedules, counterexample files and coverage (docs/concurrency-testing.md).
/// </summary>
[Collection(nameof(CoyoteCollection))]
public sealed class ConcurrentTdpPropertyTests(ITestOutputHelper output, PropertyProgress progress) : IClassFixture<PropertyProgress>
{
    static DiffProperty Property => DiffProperties.Find("tdp-concurrent");

    [Theory]
    [MemberData(nameof(RegisteredProperties.ConcurrentMmus), MemberType = typeof(RegisteredProperties))]
    public void Every_explored_schedule_of_a_generated_program_is_linearizable_to_the_spec(string property)
    {
        var time = Stopwatch.StartNew();
        var p = DiffProperties.Find(property);
        var runner = p.Check(output.WriteLine, PropertyCheck.MaxTest(p.TestCases), PropertyCheck.ReplayFromEnvironment());
        Assert.True(runner.TestsRun > 0, "the property ran no case");
        progress.Passed(property, runner.TestsRun, time.Elapsed);
    }

    [Fact]
    public void The_same_seed_draws_the_same_programs_and_explores_the_same_schedules()
    {
        var first = Property.Sample(20261204, 4).Cast<ConcurrentTdpCase>().ToList();
        var again = Property.Sample(20261204, 4).Cast<ConcurrentTdpCase>().ToList();
        Assert.Equal(first.Select(CaseJson.ToJson), again.Select(CaseJson.ToJson));
        Assert.NotEqual(CaseJson.ToJson(first[0]), CaseJson.ToJson(first[1]));
        // Each run of a case explores the same schedules: the same situations, as often.
        var c = first[1];
        var a = Counts(c);
        var b = Counts(c);
        output.WriteLine($"{c}\n{string.Join("\n", a.Select(kv => $"{kv.Key}: {kv.Value}"))}");
        Assert.Equal(a, b);
    }

    /// <summary>
    /// The default campaign's share of each concurrent property (its `dotnet test` cases, drawn as `check` draws
    /// them) reaches every situation the property requires: for `tdp-concurrent` a lost compare-and-exchange
    /// retried, a frozen entry seen, a table unlinked under the read lock and freed only after a walker left, and
    /// the rest; for `tdp-concurrent-races` a stale TLB entry used and a write-protection exchange lost.
    /// </summary>
    [Theory]
    [MemberData(nameof(RegisteredProperties.ConcurrentMmus), MemberType = typeof(RegisteredProperties))]
    public void The_property_s_test_cases_reach_every_concurrent_situation(string property)
    {
        var p = DiffProperties.Find(property);
        var tally = new CoverageTally();
        foreach (var c in p.Sample(20261121, p.TestCases)) tally.Record(p, c);
        var rows = tally.Rows([p]);
        foreach (var r in rows) output.WriteLine($"{r.Count,6}  {r.Situation}{(r.Expected ? "" : " (not required)")}");
        Assert.All(rows, r => Assert.True(r.Known, $"{r.Situation} is not a concurrent situation"));
        Assert.Equal(p.Situations.Order(StringComparer.Ordinal), rows.Where(r => r.Expected).Select(r => r.Situation).Order(StringComparer.Ordinal));
        Assert.All(rows, r => Assert.False(r.Unreached, $"{r.Situation} was never reached"));
    }

    /// <summary>Every concurrent situation is required by some concurrent property, so the default campaign reaches them all.</summary>
    [Fact]
    public void Every_concurrent_situation_is_required_by_a_concurrent_property()
    {
        var required = DiffProperties.ConcurrentMmus.SelectMany(p => p.Situations).ToHashSet(StringComparer.Ordinal);
        Assert.Equal(ConcurrentCoverage.Names.Order(StringComparer.Ordinal), required.Order(StringComparer.Ordinal));
    }

    /// <summary>
    /// The bounded real-thread stress mode: the sampled programs on the production build (no schedule points),
    /// threads released together, 200 rounds each; every history linearizable, no table leaked.
    /// </summary>
    [Fact]
    public void The_sampled_programs_on_real_threads_are_linearizable_in_every_round()
    {
        int rounds = 0, retries = 0;
        foreach (ConcurrentTdpCase c in Property.Sample(20261204, 6))
        {
            var r = ConcurrentTdpStress.Run(c, 200, TimeSpan.FromSeconds(10));
            Assert.False(r.Failed, $"{c}\n{r}");
            rounds += r.Rounds;
            retries += r.Retries;
        }
        output.WriteLine($"{rounds} rounds, {retries} accesses answered Retry");
        Assert.True(rounds >= 6, "no round ran");
    }

    static SortedDictionary<string, int> Counts(ConcurrentTdpCase c)
    {
        var counts = new SortedDictionary<string, int>(StringComparer.Ordinal);
        var v = ConcurrentTdpCheck.Run(c, s => counts[s] = counts.GetValueOrDefault(s) + 1);
        counts["schedules"] = v.Schedules;
        counts["judged"] = v.Checked;
        return counts;
    }
}
