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
        var subject = ConcurrentTdpSubject.Create<TFormat, NoSchedulePoints>(c.Config, c.Setup, c.Program.Threads.Count);
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
