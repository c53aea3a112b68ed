using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>How a stress run went: the rounds run, and the first history that was not linearizable (with why).</summary>
public sealed record ConcurrentTdpStressResult(int Rounds, int Retries, History<TdpOp, TdpLinResult>? FailingHistory, string? Failure)
{
    public bool Failed => Failure is not null;

    public override string ToString() => Failed ? $"not linearizable in round {Rounds}:\n{Failure}" : $"{Rounds} rounds linearizable ({Retries} accesses answered Retry)";
}

/// <summary>
/// The bounded real-thread stress mode of the concurrent property: a case's program on the production build of the
/// concurrent MMU (<see cref="NoSchedulePoints"/>: no scheduler, real threads released together by a barrier, the
/// CPU's and the JIT's reorderings included), each round's history judged as the Coyote runs judge theirs (results,
/// final state, table pages). What it explores depends on the machine's timing: a failure carries its history,
/// not a replayable schedule. Coyote runs explore only sequentially consistent interleavings between schedule
/// points; this is what covers the rest (docs/concurrency-testing.md).
/// </summary>
public static class ConcurrentTdpStress
{
    /// <summary>Runs the program <paramref name="rounds"/> times (fewer when <paramref name="budget"/> ends first), stopping at the first failure.</summary>
    public static ConcurrentTdpStressResult Run(ConcurrentTdpCase c, int rounds, TimeSpan? budget = null) => c.Config.Format switch
    {
        TdpFormat.Ept => Run<EptFormat>(c, rounds, budget),
        _ => Run<Stage2Format>(c, rounds, budget),
    };

    static ConcurrentTdpStressResult Run<TFormat>(ConcurrentTdpCase c, int rounds, TimeSpan? budget) where TFormat : struct, IPteFormat
    {
        DebugAssertions.ThrowOnFailure();
        var subject = ConcurrentTdpSubject.Create<TFormat, NoSchedulePoints>(c.Config, c.Setup, c.Program.Threads.Count, setupOnEveryVcpu: c.SetupOnEveryVcpu);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int retries = 0, round = 0;
        while (round < rounds && !(budget is { } b && clock.Elapsed >= b))
        {
            round++;
            var recorder = new HistoryRecorder<TdpOp, TdpLinResult>();
            using var vm = subject.Create();
            Exception? error = null;
            // Released by one store the threads spin on (a barrier wakes them one by one): their first ops overlap.
            int ready = 0, go = 0;
            var threads = c.Program.Threads.Select((ops, t) => new Thread(() =>
            {
                Interlocked.Increment(ref ready);
                while (Volatile.Read(ref go) == 0) Thread.SpinWait(20);
                foreach (var op in ops)
                {
                    int id = recorder.Invoke(t, op);
                    TdpLinResult result;
                    try { result = subject.Apply(vm, t, op); }
                    catch (Exception e) { Interlocked.CompareExchange(ref error, e, null); return; }
                    recorder.Respond(id, result);
                    if (result.IsRetry) Interlocked.Increment(ref retries);
                }
            }) { IsBackground = true, Name = $"stress T{t}" }).ToList();
            threads.ForEach(x => x.Start());
            while (Volatile.Read(ref ready) < threads.Count) Thread.Yield();
            Volatile.Write(ref go, 1);
            threads.ForEach(x => x.Join());
            var history = recorder.ToHistory();
            if (error is not null) return new(round, retries, history, $"a thread threw {error}\n{history.RenderTimeline()}");
            var final = ConcurrentTdpCheck.Leaked(vm) is { } leak ? TdpLinState.Leaked(leak) : subject.ObserveFinal!(vm);
            var verdict = Linearizability.Check(history, subject.Spec, final);
            if (!verdict.IsLinearizable) return new(round, retries, history, verdict.Explanation);
        }
        return new(round, retries, null, null);
    }
}

/// <summary>
/// The stress campaign behind `mmuspec stress` (docs/cli.md): programs drawn from one seed as the `tdp-concurrent`
/// property draws them (<see cref="ConcurrentTdpGen.Build"/>), each reshaped to a number of threads and run
/// <see cref="ConcurrentTdpStress.Run"/> for some rounds, until a history is not linearizable, the budget or the
/// case count ends, or <see cref="Stop"/>. The programs are the seed's; which interleavings the machine runs is not.
/// </summary>
public sealed class ConcurrentTdpStressCampaign(ulong seed, int threads, int roundsPerCase, TimeSpan budget, long? maxCases)
{
    long cases, rounds, ops, retries;
    volatile bool stopped;
    readonly System.Diagnostics.Stopwatch clock = new();

    public const int MinThreads = 2, MaxThreads = ConcurrentTdpCase.MaxThreads;

    public long Cases => Interlocked.Read(ref cases);
    public long Rounds => Interlocked.Read(ref rounds);
    public long Ops => Interlocked.Read(ref ops);
    public long Retries => Interlocked.Read(ref retries);
    public TimeSpan Elapsed => clock.Elapsed;

    /// <summary>Ends the campaign after the program running now.</summary>
    public void Stop() => stopped = true;

    /// <summary>Program <paramref name="index"/> of the seed, with <paramref name="threads"/> threads (VM: EPT, as `tdp-concurrent`).</summary>
    public static ConcurrentTdpCase CaseAt(ulong seed, long index, int threads)
    {
        // A fixed mix (HashCode is seeded per process): the same seed draws the same programs everywhere.
        ulong mixed = (seed + 0x9E3779B97F4A7C15UL * (ulong)(index + 1)) * 0xBF58476D1CE4E5B9UL;
        int caseSeed = (int)((mixed ^ (mixed >> 31)) & int.MaxValue);
        var c = ConcurrentTdpGen.Build(caseSeed, (int)(index % 100), new VmConfig(TdpFormat.Ept));
        return WithThreads(c, threads);
    }

    /// <summary>
    /// The program with exactly <paramref name="threads"/> threads: a thread beyond the drawn ones repeats one of them
    /// on its own vCPU (more faults on the same gfns at once), and the ops of threads beyond the count join the
    /// remaining ones (up to <see cref="ConcurrentTdpCase.MaxOpsPerThread"/>).
    /// </summary>
    public static ConcurrentTdpCase WithThreads(ConcurrentTdpCase c, int threads)
    {
        var drawn = c.Program.Threads;
        var result = Enumerable.Range(0, threads).Select(t => drawn[t % drawn.Count].ToList()).ToList();
        for (int t = threads; t < drawn.Count; t++)
        {
            var into = result[t % threads];
            into.AddRange(drawn[t].Take(ConcurrentTdpCase.MaxOpsPerThread - into.Count));
        }
        return c.WithProgram(new ConcurrentProgram<TdpOp>([.. result.Select(ops => (IReadOnlyList<TdpOp>)ops)]));
    }

    /// <summary>Runs until a failure (returned with its case and index), the budget, the case count or <see cref="Stop"/> (null).</summary>
    public (ConcurrentTdpCase Case, long Index, ConcurrentTdpStressResult Result)? Run()
    {
        clock.Start();
        for (long i = 0; !stopped && (maxCases is not { } max || i < max) && clock.Elapsed < budget; i++)
        {
            var c = CaseAt(seed, i, threads);
            var r = ConcurrentTdpStress.Run(c, roundsPerCase, budget - clock.Elapsed);
            Interlocked.Increment(ref cases);
            Interlocked.Add(ref rounds, r.Rounds);
            Interlocked.Add(ref ops, (long)r.Rounds * c.OpCount);
            Interlocked.Add(ref retries, r.Retries);
            if (r.Failed) { clock.Stop(); return (c, i, r); }
        }
        clock.Stop();
        return null;
    }
}
