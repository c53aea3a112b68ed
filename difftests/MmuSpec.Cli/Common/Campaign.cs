using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.FSharp.Core;
using MmuSpec.Harness.Running;

namespace MmuSpec.Cli;

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
    public long Cases => Tallies.Sum(t => t.Cases);
    public long Ops => Tallies.Sum(t => t.Ops);
    public bool Failed => FailureReport is not null;
}

/// <summary>
/// A differential campaign: the properties in round-robin, in batches. Batch b runs property
/// b mod n for up to <c>batchSize</c> cases from its own FsCheck seed, derived from the master seed
/// and b alone, so the same <c>--seed</c> replays the same campaign batch for batch (a time budget
/// only decides how many batches run). A failure shrinks and stops the campaign; its report ends
/// with the one-case replay token.
/// </summary>
public sealed class Campaign(IReadOnlyList<DiffProperty> properties, ulong seed, int batchSize, long? maxCases, TimeSpan? budget)
{
    readonly PropertyTally[] tallies = properties.Select(p => new PropertyTally(p)).ToArray();
    readonly Stopwatch clock = new();
    volatile bool stop;

    public IReadOnlyList<PropertyTally> Tallies => tallies;
    public TimeSpan Elapsed => clock.Elapsed;

    /// <summary>Asks the campaign to stop after the batch under way (Ctrl-C).</summary>
    public void Stop() => stop = true;

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

    public CampaignResult Run()
    {
        clock.Start();
        long shrinkRuns = 0;
        for (long batch = 0; !stop; batch++)
        {
            long done = tallies.Sum(t => t.Cases);
            if (maxCases is { } max && done >= max) break;
            if (budget is { } b && clock.Elapsed >= b) break;
            int size = (int)Math.Min(batchSize, maxCases is { } m ? m - done : batchSize);

            var tally = tallies[batch % tallies.Length];
            var p = tally.Property;
            bool failing = false;
            bool Holds(object c)
            {
                bool ok = p.Holds(c);
                if (failing) { shrinkRuns++; return ok; }   // shrink candidates are not campaign cases
                Interlocked.Increment(ref tally.Cases);
                Interlocked.Add(ref tally.Ops, p.OpCount(c));
                failing = !ok;
                return ok;
            }

            // A replay without a size makes the batch's seed the start of MaxTest cases.
            var replay = new Replay(BatchRnd(seed, batch), FSharpOption<int>.None);
            var runner = PropertyCheck.Check(p.Name, p, _ => { }, size, replay, throwOnFailure: false, holds: Holds);
            tally.Batches++;

            if (runner.FailureReport is { } report)
            {
                clock.Stop();
                string? token = runner.FailingReplay is { } r ? PropertyCheck.FormatReplay(r) : null;
                return new CampaignResult(seed, clock.Elapsed, tallies, false, p.Name, batch, report, token, shrinkRuns);
            }
        }
        clock.Stop();
        return new CampaignResult(seed, clock.Elapsed, tallies, stop, null, -1, null, null, shrinkRuns);
    }
}
