using System.Diagnostics;
using System.Globalization;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.FSharp.Core;

namespace MmuSpec.Harness.Running;

/// <summary>Counts for one property over a campaign.</summary>
public sealed class PropertyTally(DiffProperty property)
{
    public DiffProperty Property { get; } = property;
    public long Cases;
    public long Ops;
    public long Batches;
}

/// <summary>How a campaign ended.</summary>
public sealed record CampaignResult(
    ulong Seed, TimeSpan Elapsed, IReadOnlyList<PropertyTally> Tallies, bool Interrupted,
    string? FailedProperty, long FailedBatch, string? FailureReport, string? FailureReplay, long ShrinkRuns)
{
    /// <summary>Campaign time when the first failing case was drawn (before shrinking); null when none failed.</summary>
    public TimeSpan? FoundAfter { get; init; }
    /// <summary>Operations in the shrunk counterexample (the property's own count); null when none failed.</summary>
    public int? ShrunkOps { get; init; }
    /// <summary>The counterexample file written for the failure (docs/counterexample-format.md), if it could be written.</summary>
    public string? CounterexampleFile { get; init; }

    /// <summary>Properties that ran no case: a budget or a case limit too small for the schedule, or an interruption.</summary>
    public IReadOnlyList<DiffProperty> NotRun => [.. Tallies.Where(t => t.Cases == 0).Select(t => t.Property)];
    /// <summary>Properties that ran some cases but fewer than `dotnet test` gives them (<see cref="DiffProperty.TestCases"/>).</summary>
    public IReadOnlyList<PropertyTally> BelowTestCases => [.. Tallies.Where(t => t.Cases > 0 && t.Cases < t.Property.TestCases)];

    public long Cases => Tallies.Sum(t => t.Cases);
    public long Ops => Tallies.Sum(t => t.Ops);
    public bool Failed => FailureReport is not null;
}

/// <summary>
/// One part of a campaign split across machines: shard <see cref="Index"/> (1-based) of
/// <see cref="Count"/> runs the batches b with b mod Count == Index - 1. Machines given the same seed
/// and the shards 1/n .. n/n run disjoint batches which together are the batches one machine runs.
/// </summary>
public sealed record Shard(int Index, int Count)
{
    /// <summary>The whole campaign (shard 1 of 1).</summary>
    public static Shard Whole { get; } = new(1, 1);

    public bool IsWhole => Count == 1;

    /// <summary>Whether this shard runs batch <paramref name="batch"/>.</summary>
    public bool Runs(long batch) => batch % Count == Index - 1;

    /// <summary>This shard's first batch at or after <paramref name="batch"/>.</summary>
    public long NextBatch(long batch) => batch + ((Index - 1 - batch % Count) % Count + Count) % Count;

    /// <summary>Parses "i/n" with 1 &lt;= i &lt;= n; the error says what is wrong, for the command line.</summary>
    public static bool TryParse(string text, out Shard shard, out string error)
    {
        shard = Whole;
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int i)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n))
        {
            error = $"'{text}' is not i/n (two positive whole numbers, e.g. 2/4: the second of four shards)";
            return false;
        }
        if (n < 1) { error = $"'{text}': the number of shards must be at least 1"; return false; }
        if (i < 1 || i > n) { error = $"'{text}': the shard number must be between 1 and {n}"; return false; }
        shard = new Shard(i, n);
        error = "";
        return true;
    }

    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>
/// A differential campaign: the properties in batches. Batch b runs property <see cref="PropertyOf"/>(b)
/// for up to <c>batchSize</c> cases from its own FsCheck seed, derived from the master seed and b alone, so
/// the same <c>--seed</c> replays the same campaign batch for batch (a time budget only decides how many
/// batches run). The schedule first gives every property the cases `dotnet test` gives it (its
/// <see cref="DiffProperty.TestCases"/>, in rounds: each round one batch of every property still short
/// of it), then goes round-robin; every property runs in the first round. With a case limit, batch b
/// runs min(batchSize, maxCases - b·batchSize) cases and the campaign ends at the batch that reaches the
/// limit, whatever the shard: a shard runs only its own batches of that plan. A failure shrinks and stops
/// the campaign; its report ends with the one-case replay token. <paramref name="endSize"/> is FsCheck's
/// EndSize: sizes ramp from 1 to it within each batch (the deep tier raises it). With
/// <paramref name="minimumFirst"/> the budget does not end the campaign before every property has had
/// its TestCases (the default `check`); otherwise the budget is a hard limit on starting batches.
/// </summary>
public sealed class Campaign(IReadOnlyList<DiffProperty> properties, ulong seed, int batchSize, long? maxCases, TimeSpan? budget,
    Shard? shard = null, int endSize = Campaign.DefaultEndSize, Action<DiffProperty, long, object>? onCase = null, bool minimumFirst = false)
{
    /// <summary>FsCheck's default EndSize: the size the default tier and `dotnet test` ramp to.</summary>
    public const int DefaultEndSize = 100;

    readonly PropertyTally[] tallies = properties.Select(p => new PropertyTally(p)).ToArray();
    readonly Stopwatch clock = new();
    readonly Shard part = shard ?? Shard.Whole;
    readonly int[] plan = MinimumPlan(properties, batchSize);
    volatile bool stop;

    public IReadOnlyList<PropertyTally> Tallies => tallies;
    public TimeSpan Elapsed => clock.Elapsed;
    public Shard Shard => part;

    /// <summary>
    /// Asks the campaign to stop (Ctrl-C, SIGTERM): the batch under way runs no further case, none starts,
    /// and the result says it was interrupted. Safe from any thread.
    /// </summary>
    public void Stop() => stop = true;

    /// <summary>Batches at the start of the schedule that give every property its <see cref="DiffProperty.TestCases"/>.</summary>
    public int MinimumBatches => plan.Length;

    /// <summary>The index (into the campaign's properties) of the property batch <paramref name="batch"/> runs.</summary>
    public int PropertyOf(long batch) => batch < plan.Length ? plan[batch] : (int)((batch - plan.Length) % tallies.Length);

    /// <summary>
    /// The minimum part of the schedule: round r holds, in the properties' order, every property that needs
    /// more than r batches of <paramref name="batchSize"/> to reach its TestCases. Round 0 holds every property.
    /// </summary>
    static int[] MinimumPlan(IReadOnlyList<DiffProperty> properties, int batchSize)
    {
        if (properties.Count == 0) throw new ArgumentException("a campaign needs at least one property", nameof(properties));
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "a batch has at least one case");
        var needs = properties.Select(p => (p.TestCases + batchSize - 1) / batchSize).ToArray();
        var plan = new List<int>();
        for (int round = 0; round < needs.Max(); round++)
            for (int i = 0; i < needs.Length; i++)
                if (round < needs[i]) plan.Add(i);
        return [.. plan];
    }

    /// <summary>
    /// The FsCheck seed of batch <paramref name="batch"/>: SplitMix64 of the master seed stepped by
    /// the golden gamma, and an odd gamma mixed from it (SplitMix needs an odd gamma; mixing keeps
    /// neighbouring batches' streams unrelated). The size is left open so the batch ramps sizes.
    /// </summary>
    public static Rnd BatchRnd(ulong seed, long batch)
    {
        const ulong Golden = 0x9E37_79B9_7F4A_7C15;
        ulong s = Mix(seed + Golden * (ulong)(batch + 1));
        ulong gamma = Mix(s ^ 0xD1B5_4A32_D192_ED03) | 1;
        return new Rnd(s, gamma);
    }

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }

    /// <summary>Cases of batch <paramref name="batch"/> under a case limit (0: past the limit, the campaign is over); <c>batchSize</c> without one.</summary>
    public static int BatchCases(long batch, int batchSize, long? maxCases) =>
        maxCases is { } max ? (int)Math.Clamp(max - batch * batchSize, 0, batchSize) : batchSize;

    public CampaignResult Run()
    {
        clock.Start();
        long shrinkRuns = 0;
        for (long batch = part.NextBatch(0); !stop; batch += part.Count)
        {
            int size = BatchCases(batch, batchSize, maxCases);
            if (size == 0) break;
            if (budget is { } b && clock.Elapsed >= b && !(minimumFirst && batch < plan.Length)) break;

            var tally = tallies[PropertyOf(batch)];
            var p = tally.Property;
            bool failing = false;
            TimeSpan? foundAfter = null;
            long thisBatch = batch;
            bool Holds(object c)
            {
                if (failing) { shrinkRuns++; return p.Holds(c); }   // shrink candidates are not campaign cases
                if (stop) return true;   // interrupted: FsCheck draws the rest of the batch, nothing runs or counts
                bool ok = p.Holds(c);
                Interlocked.Increment(ref tally.Cases);
                Interlocked.Add(ref tally.Ops, p.OpCount(c));
                onCase?.Invoke(p, thisBatch, c);
                failing = !ok;
                if (failing) foundAfter = clock.Elapsed;
                return ok;
            }

            // A replay without a size makes the batch's seed the start of `size` cases, sizes ramping to endSize
            // (PropertyCheck.Check's runner and config, with the campaign's EndSize).
            var runner = new PropertyRunner(p.Name, _ => { }, p.Explain,
                counterexamples: new CounterexampleTarget(p, CounterexampleFile.DefaultDirectory(), seed, batch));
            var config = Config.Quick.WithRunner(runner).WithName(p.Name).WithMaxTest(size).WithEndSize(endSize)
                .WithReplay(FSharpOption<Replay>.Some(new Replay(BatchRnd(seed, batch), FSharpOption<int>.None)));
            FsCheck.Check.One(config, p.ForAll(Holds));
            if (!stop) Interlocked.Increment(ref tally.Batches);   // an interrupted batch is not a whole batch

            if (runner.FailureReport is { } report)
            {
                clock.Stop();
                string? token = runner.FailingReplay is { } r ? PropertyCheck.FormatReplay(r) : null;
                return new CampaignResult(seed, clock.Elapsed, tallies, false, p.Name, batch, report, token, shrinkRuns)
                {
                    FoundAfter = foundAfter,
                    ShrunkOps = runner.FailingCase is { } shrunk ? p.OpCount(shrunk) : null,
                    CounterexampleFile = runner.CounterexampleFile,
                };
            }
        }
        clock.Stop();
        return new CampaignResult(seed, clock.Elapsed, tallies, stop, null, -1, null, null, shrinkRuns);
    }
}
