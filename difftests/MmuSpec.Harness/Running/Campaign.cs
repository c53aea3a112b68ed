using System.Diagnostics;
using System.Globalization;
using System.Runtime.ExceptionServices;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.FSharp.Core;

namespace MmuSpec.Harness.Running;

/// <summary>
/// Counts for one property over a campaign. The campaign adds each batch's counts when the batch is counted,
/// in batch order (<see cref="Campaign"/>); readers on other threads (the progress line) use Interlocked.Read.
/// </summary>
public sealed class PropertyTally(DiffProperty property)
{
    public DiffProperty Property { get; } = property;
    public long Cases;
    public long Ops;
    public long Batches;
    /// <summary>Stopwatch ticks the property's counted batches ran on their jobs (drawing and running cases; not shrinking).</summary>
    public long BusyTicks;

    /// <summary>The time the property's counted batches ran, summed over the jobs that ran them.</summary>
    public TimeSpan Busy => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref BusyTicks));

    /// <summary>Operations per second of one job running this property: its ops over <see cref="Busy"/>.</summary>
    public double OpsPerSecond => Ops / Math.Max(Busy.TotalSeconds, 1e-3);
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

    /// <summary>Batches run at once (<c>--jobs</c>).</summary>
    public int Jobs { get; init; } = 1;
    /// <summary>The time counted batches ran, summed over the jobs: the CPU time the campaign's cases took.</summary>
    public TimeSpan Busy => Tallies.Aggregate(TimeSpan.Zero, (sum, t) => sum + t.Busy);
    /// <summary>Operations per second of one job: <see cref="Ops"/> over <see cref="Busy"/> (wall-clock time, so lower when the jobs wait for a core).</summary>
    public double OpsPerJobSecond => Ops / Math.Max(Busy.TotalSeconds, 1e-3);
    /// <summary>The processor time the process used while the campaign ran (every thread: jobs, shrinking, the garbage collector).</summary>
    public TimeSpan CpuTime { get; init; }
    /// <summary>Operations per CPU-second, the campaign's throughput per core whatever else the machine runs: <see cref="Ops"/> over <see cref="CpuTime"/>.</summary>
    public double OpsPerCpuSecond => Ops / Math.Max(CpuTime.TotalSeconds, 1e-3);
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
/// runs min(batchSize, maxCases - the cases of the batches before) cases (a property's batches hold at most its
/// <see cref="DiffProperty.MaxBatchCases"/>) and the campaign ends at the batch that reaches the
/// limit, whatever the shard: a shard runs only its own batches of that plan. A failure shrinks and stops
/// the campaign; its report ends with the one-case replay token. <paramref name="endSize"/> is FsCheck's
/// EndSize: sizes ramp from 1 to it within each batch (the deep tier raises it). With
/// <paramref name="minimumFirst"/> the budget does not end the campaign before every property has had
/// its TestCases (the default `check`); otherwise the budget is a hard limit on starting batches.
/// <para>
/// <paramref name="jobs"/> batches run at once, each on its own thread, and the result is the serial
/// run's: jobs take batches in order, so the batches started are always a prefix of the schedule, and a
/// batch is counted (tallies, <paramref name="onCase"/>) only once every earlier batch is, in batch order.
/// The serial run stops at its first failing batch, so a failure in batch b stops the batches after b at
/// their next case and starts none, and b waits, before shrinking, for every earlier batch: one of them
/// failing too overtakes b (b is dropped unshrunk, as a serial run never reached it). With a case limit the
/// same cases run; a time budget or an interruption ends the jobs at a moment that depends on their speed.
/// </para>
/// <paramref name="onCase"/> sees every counted case, batch after batch in the schedule's order, from
/// one thread at a time (not necessarily the caller's).
/// </summary>
public sealed class Campaign(IReadOnlyList<DiffProperty> properties, ulong seed, int batchSize, long? maxCases, TimeSpan? budget,
    Shard? shard = null, int endSize = Campaign.DefaultEndSize, Action<DiffProperty, long, object>? onCase = null, bool minimumFirst = false,
    int jobs = 1)
{
    /// <summary>FsCheck's default EndSize: the size the default tier and `dotnet test` ramp to.</summary>
    public const int DefaultEndSize = 100;
    /// <summary>The most batches a campaign runs at once (<c>--jobs</c>).</summary>
    public const int MaxJobs = 256;
    /// <summary>A job's stack: a main thread's usual 8 MiB, as generators and shrinkers recurse over a case.</summary>
    const int JobStackBytes = 8 << 20;

    readonly PropertyTally[] tallies = properties.Select(p => new PropertyTally(p)).ToArray();
    readonly Stopwatch clock = new();
    readonly Shard part = shard ?? Shard.Whole;
    readonly int[] plan = MinimumPlan(properties, batchSize);
    readonly int jobCount = jobs is >= 1 and <= MaxJobs ? jobs : throw new ArgumentOutOfRangeException(nameof(jobs), jobs, $"a campaign runs 1 to {MaxJobs} batches at once");
    volatile bool stop;

    // The jobs' shared state, under `gate`: the next batch to start, whether no more start, the lowest failing
    // batch, the lowest batch not finished, finished batches waiting for an earlier one, and those ready to count.
    readonly object gate = new();
    long next;
    bool closed;
    long failFloor = long.MaxValue;
    long frontier;
    readonly Dictionary<long, BatchRun> finished = [];
    readonly Queue<BatchRun> ready = new();
    bool counting;
    BatchRun? failure;
    long shrinkRuns;
    ExceptionDispatchInfo? fault;

    public IReadOnlyList<PropertyTally> Tallies => tallies;
    public TimeSpan Elapsed => clock.Elapsed;
    public Shard Shard => part;
    /// <summary>Batches run at once.</summary>
    public int Jobs => jobCount;

    /// <summary>
    /// Asks the campaign to stop (Ctrl-C, SIGTERM): the batches under way run no further case, none starts,
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
        var needs = properties.Select(p => (p.TestCases + Math.Min(batchSize, p.MaxBatchCases) - 1) / Math.Min(batchSize, p.MaxBatchCases)).ToArray();
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

    // Cases the batches before batch i hold (i = index), each batch min(batchSize, its property's MaxBatchCases); extended under `gate`.
    readonly List<long> casesBefore = [0];

    /// <summary>
    /// Cases of batch <paramref name="batch"/>: <see cref="BatchCases"/> when every batch holds <c>batchSize</c>; with a
    /// property whose batches hold fewer (<see cref="DiffProperty.MaxBatchCases"/>), the limit counts the cases the
    /// batches before really hold, so `--count N` still runs N cases. Call under <c>gate</c>.
    /// </summary>
    int CasesOf(long batch)
    {
        int Size(long b) => Math.Min(batchSize, tallies[PropertyOf(b)].Property.MaxBatchCases);
        if (maxCases is not { } max) return Size(batch);
        while (casesBefore.Count <= batch) casesBefore.Add(casesBefore[^1] + Size(casesBefore.Count - 1));
        return (int)Math.Clamp(max - casesBefore[(int)batch], 0, Size(batch));
    }

    /// <summary>One batch as a job ran it: its counts, its cases (for onCase) and its failure, if any.</summary>
    sealed class BatchRun(long batch, int property)
    {
        public long Batch { get; } = batch;
        public int Property { get; } = property;
        public long Cases, Ops, ShrinkRuns, BusyTicks;
        public bool Whole;
        public List<object>? CaseList;
        public string? Report, Token, CounterexampleFile;
        public int? ShrunkOps;
        public TimeSpan? FoundAfter;
    }

    public CampaignResult Run()
    {
        using var self = Process.GetCurrentProcess();
        var cpuBefore = self.TotalProcessorTime;
        clock.Start();
        next = frontier = part.NextBatch(0);
        if (jobCount == 1) Job();
        else
        {
            var threads = Enumerable.Range(0, jobCount).Select(j => new Thread(Job, JobStackBytes) { Name = $"campaign job {j}", IsBackground = true }).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
        }
        clock.Stop();
        self.Refresh();
        var cpu = self.TotalProcessorTime - cpuBefore;
        fault?.Throw();
        if (failure is { } f)
        {
            var p = tallies[f.Property].Property;
            return new CampaignResult(seed, clock.Elapsed, tallies, false, p.Name, f.Batch, f.Report, f.Token, shrinkRuns)
            {
                FoundAfter = f.FoundAfter,
                ShrunkOps = f.ShrunkOps,
                CounterexampleFile = f.CounterexampleFile,
                Jobs = jobCount,
                CpuTime = cpu,
            };
        }
        return new CampaignResult(seed, clock.Elapsed, tallies, stop, null, -1, null, null, shrinkRuns) { Jobs = jobCount, CpuTime = cpu };
    }

    /// <summary>One job: takes the next batch of the schedule and runs it, until the schedule, the budget, a failure or a stop ends.</summary>
    void Job()
    {
        try
        {
            while (Take() is var (batch, size))
                Finish(RunBatch(batch, size));
        }
        catch (Exception e)
        {
            lock (gate)
            {
                fault ??= ExceptionDispatchInfo.Capture(e);
                closed = true;
                Monitor.PulseAll(gate);   // a failing batch waiting for this job's batch must not wait forever
            }
        }
    }

    /// <summary>The next batch to start and its cases; null when none starts (the serial run would have ended here).</summary>
    (long Batch, int Size)? Take()
    {
        lock (gate)
        {
            long batch = next;
            int size = CasesOf(batch);
            // Under the lock, so the batches started are a prefix of the schedule whatever the order jobs come in.
            if (closed || stop || batch > failFloor || size == 0
                || budget is { } b && clock.Elapsed >= b && !(minimumFirst && batch < plan.Length))
            {
                closed = true;
                return null;
            }
            next = batch + part.Count;
            return (batch, size);
        }
    }

    BatchRun RunBatch(long batch, int size)
    {
        var run = new BatchRun(batch, PropertyOf(batch)) { CaseList = onCase is null ? null : new(size) };
        var p = tallies[run.Property].Property;
        long started = Stopwatch.GetTimestamp();
        bool failing = false, overtaken = false;
        bool Holds(object c)
        {
            if (failing) { run.ShrinkRuns++; return p.Holds(c); }   // shrink candidates are not campaign cases
            // Interrupted, or an earlier batch failed: FsCheck draws the rest of the batch, nothing runs or counts.
            if (stop || overtaken || Volatile.Read(ref failFloor) < batch) return true;
            bool ok = p.Holds(c);
            run.Cases++;
            run.Ops += p.OpCount(c);
            run.CaseList?.Add(c);
            if (ok) return true;
            run.FoundAfter = clock.Elapsed;
            run.BusyTicks = Stopwatch.GetTimestamp() - started;
            overtaken = Overtaken(batch);
            failing = !overtaken;
            return overtaken;   // overtaken: reported as passing, so FsCheck neither shrinks nor writes a counterexample
        }

        // A replay without a size makes the batch's seed the start of `size` cases, sizes ramping to endSize
        // (PropertyCheck.Check's runner and config, with the campaign's EndSize).
        var runner = new PropertyRunner(p.Name, _ => { }, p.Explain,
            counterexamples: new CounterexampleTarget(p, CounterexampleFile.DefaultDirectory(), seed, batch));
        var config = Config.Quick.WithRunner(runner).WithName(p.Name).WithMaxTest(size).WithEndSize(endSize)
            .WithReplay(FSharpOption<Replay>.Some(new Replay(BatchRnd(seed, batch), FSharpOption<int>.None)));
        FsCheck.Check.One(config, p.ForAll(Holds));
        if (run.FoundAfter is null) run.BusyTicks = Stopwatch.GetTimestamp() - started;
        run.Whole = !stop;   // an interrupted batch is not a whole batch
        if (runner.FailureReport is { } report)
        {
            run.Report = report;
            run.Token = runner.FailingReplay is { } r ? PropertyCheck.FormatReplay(r) : null;
            run.ShrunkOps = runner.FailingCase is { } shrunk ? p.OpCount(shrunk) : null;
            run.CounterexampleFile = runner.CounterexampleFile;
            if (!failing) Overtaken(batch, wait: false);   // gave up (too many discards): a failure found only now
        }
        return run;
    }

    /// <summary>
    /// Batch <paramref name="batch"/> drew a failing case: stops the later batches, then waits until every
    /// earlier batch has finished. True when one of them failed as well (the serial run stops there first).
    /// </summary>
    bool Overtaken(long batch, bool wait = true)
    {
        lock (gate)
        {
            if (batch < failFloor) failFloor = batch;
            Monitor.PulseAll(gate);
            while (wait && frontier < batch && failFloor == batch && fault is null) Monitor.Wait(gate);
            return failFloor < batch || fault is not null;
        }
    }

    /// <summary>Records a finished batch and counts, in batch order, every batch whose earlier batches are all counted.</summary>
    void Finish(BatchRun run)
    {
        lock (gate)
        {
            finished.Add(run.Batch, run);
            while (finished.Remove(frontier, out var r))
            {
                ready.Enqueue(r);
                frontier += part.Count;
            }
            Monitor.PulseAll(gate);
            if (counting) return;   // the job counting now takes these too
            counting = true;
        }
        // Outside the lock, so onCase (coverage classifies each case on the spec) does not hold up the other jobs.
        while (true)
        {
            BatchRun r;
            lock (gate)
            {
                if (!ready.TryDequeue(out r!)) { counting = false; return; }
            }
            Count(r);
        }
    }

    /// <summary>Adds a batch to the tallies: only up to the first failure, where a serial run stops.</summary>
    void Count(BatchRun r)
    {
        if (failure is not null) return;
        var tally = tallies[r.Property];
        if (r.CaseList is { } cases)
            foreach (var c in cases) onCase!(tally.Property, r.Batch, c);
        Interlocked.Add(ref tally.Cases, r.Cases);
        Interlocked.Add(ref tally.Ops, r.Ops);
        Interlocked.Add(ref tally.BusyTicks, r.BusyTicks);
        if (r.Whole) Interlocked.Increment(ref tally.Batches);
        shrinkRuns += r.ShrinkRuns;
        if (r.Report is not null) failure = r;
    }
}
