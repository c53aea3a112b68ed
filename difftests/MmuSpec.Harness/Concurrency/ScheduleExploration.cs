using Microsoft.Coyote;
using Microsoft.Coyote.Logging;
using Microsoft.Coyote.Runtime;
using Microsoft.Coyote.Specifications;
using Microsoft.Coyote.SystematicTesting;

namespace MmuSpec.Harness.Concurrency;

/// <summary>What each logical thread runs, in order, against one shared object.</summary>
public sealed record ConcurrentProgram<TOp>(IReadOnlyList<IReadOnlyList<TOp>> Threads)
{
    public int OpCount => Threads.Sum(t => t.Count);

    public override string ToString() => string.Join("; ", Threads.Select((t, i) => $"T{i}: " + string.Join(", ", t)));
}

/// <summary>
/// A concurrent object under test and the sequential spec it must refine. <see cref="Apply"/> runs one op
/// on a logical thread and returns its result; the object yields to the scheduler only where its code
/// calls a schedule point (<see cref="CoyoteSchedulePoint"/>). <see cref="ObserveFinal"/>, when given,
/// reads the object's abstract state after every thread finished: the order that explains the results
/// must also end in that state. An object that is <see cref="IDisposable"/> is disposed after each run.
/// </summary>
public sealed record ConcurrentSubject<TObject, TState, TOp, TResult>(
    Func<TObject> Create,
    Func<TObject, int, TOp, TResult> Apply,
    ISequentialSpec<TState, TOp, TResult> Spec,
    Func<TObject, TState>? ObserveFinal = null)
    where TState : notnull;

/// <summary>How Coyote picks the next thread at a schedule point.</summary>
public enum ScheduleStrategy
{
    /// <summary>Uniformly at random at every point.</summary>
    Random,

    /// <summary>Priority-based (PCT): threads get random priorities that change at a few random points; finds ordering bugs of small depth in few iterations.</summary>
    Prioritization,
}

/// <summary>
/// An exploration's bounds: how many schedules (iterations), from which seed, how chosen.
/// <see cref="TraceFile"/>: where a failing schedule's trace is written (nothing is written on success).
/// <see cref="DeadlockTimeoutMs"/>: how long a thread may block outside a schedule point before Coyote
/// reports a potential deadlock; 10 s rather than Coyote's 1 s, so a thread start delayed on a loaded
/// CI machine is not taken for one.
/// </summary>
public sealed record ExplorationSettings(
    uint Iterations,
    uint Seed,
    ScheduleStrategy Strategy = ScheduleStrategy.Prioritization,
    uint PriorityChanges = 5,
    string? TraceFile = null,
    uint DeadlockTimeoutMs = 10_000);

/// <summary>
/// The outcome of exploring schedules: the iterations run and, on failure, the failing schedule's
/// history, why it failed and Coyote's reproducible trace of that schedule (JSON), which
/// <see cref="ScheduleExploration.Replay"/> reruns to the same failure. <see cref="Checked"/>: the
/// iterations whose history was judged; one Coyote ended at its step bound (a thread spinning on a
/// schedule point while the strategy starved another) was not, and passes silently.
/// </summary>
public sealed record ExplorationResult<TOp, TResult>(
    bool Failed,
    int Iterations,
    History<TOp, TResult>? FailingHistory,
    string? Failure,
    string? ReproducibleTrace,
    int Checked)
{
    public override string ToString() => Failed ? $"failed in iteration {Iterations}:\n{Failure}" : $"passed {Iterations} schedules ({Checked} checked)";
}

/// <summary>
/// Runs a concurrent program under Coyote's controlled scheduler, without binary rewriting
/// (docs/concurrency-testing.md): each logical thread is a real thread registered as a controlled
/// operation, so exactly one runs at a time and the scheduler chooses who runs at every schedule
/// point. Each iteration records the history and checks it for linearizability; the first failing
/// iteration stops the exploration.
/// </summary>
public static class ScheduleExploration
{
    static long explored;

    /// <summary>Schedules this process has run (every exploration and replay, on any thread): `check` reports it for the concurrent property.</summary>
    public static long SchedulesExplored => Interlocked.Read(ref explored);

    public static ExplorationResult<TOp, TResult> Explore<TObject, TState, TOp, TResult>(
        ConcurrentSubject<TObject, TState, TOp, TResult> subject, ConcurrentProgram<TOp> program, ExplorationSettings settings)
        where TState : notnull
    {
        var config = BaseConfiguration().WithTestingIterations(settings.Iterations).WithRandomGeneratorSeed(settings.Seed)
            .WithDeadlockTimeout(settings.DeadlockTimeoutMs);
        config = settings.Strategy switch
        {
            ScheduleStrategy.Random => config.WithRandomStrategy(),
            _ => config.WithPrioritizationStrategy(false, settings.PriorityChanges),
        };
        var result = Run(subject, program, config);
        if (result.Failed && settings.TraceFile is { } file) File.WriteAllText(file, result.ReproducibleTrace);
        return result;
    }

    /// <summary>Reruns the one schedule a <see cref="ExplorationResult{TOp, TResult}.ReproducibleTrace"/> recorded.</summary>
    public static ExplorationResult<TOp, TResult> Replay<TObject, TState, TOp, TResult>(
        ConcurrentSubject<TObject, TState, TOp, TResult> subject, ConcurrentProgram<TOp> program, string reproducibleTrace)
        where TState : notnull
        => Run(subject, program, BaseConfiguration().WithReproducibleTrace(reproducibleTrace));

    // Telemetry off (no network from tests), Coyote's own console log off (the result says what failed).
    static Configuration BaseConfiguration() => Configuration.Create()
        .WithTelemetryEnabled(false)
        .WithConsoleLoggingEnabled(false)
        .WithVerbosityEnabled(VerbosityLevel.None);

    static ExplorationResult<TOp, TResult> Run<TObject, TState, TOp, TResult>(
        ConcurrentSubject<TObject, TState, TOp, TResult> subject, ConcurrentProgram<TOp> program, Configuration config)
        where TState : notnull
    {
        HistoryRecorder<TOp, TResult>? recorder = null;
        string? failure = null;
        int iterations = 0, judged = 0;
        using var engine = TestingEngine.Create(config, () =>
        {
            iterations++;
            Interlocked.Increment(ref explored);
            failure = null;
            recorder = new HistoryRecorder<TOp, TResult>();
            var (error, final) = RunOnce(subject, program, recorder);
            var history = recorder.ToHistory();
            if (error is not null)
            {
                // A liveness verdict is the harness's own judgement, not a crash: its message, without a stack.
                failure = error.Value.Exception is NoForwardProgressException livelock
                    ? $"{livelock.Message} (thread {error.Value.Thread}'s op stays pending)\n{history.RenderTimeline()}"
                    : $"thread {error.Value.Thread} threw {error.Value.Exception}\n{history.RenderTimeline()}";
                Specification.Assert(false, failure);
            }
            var verdict = subject.ObserveFinal is null ? Linearizability.Check(history, subject.Spec) : Linearizability.Check(history, subject.Spec, final!);
            judged++;
            if (!verdict.IsLinearizable)
            {
                failure = verdict.Explanation;
                Specification.Assert(false, failure);
            }
        });
        // The engine writes its progress to the console whatever the verbosity: silence it.
        engine.SetLogger(new TextWriterLogger(TextWriter.Null, VerbosityLevel.None));
        engine.Run();
        var report = engine.TestReport;
        if (report.NumOfFoundBugs == 0) return new(false, iterations, null, null, null, judged);
        // A bug Coyote found itself (a deadlock: a thread blocked outside a schedule point) has no failure of
        // ours; its history is what the threads had done when Coyote stopped them (ops in flight pending).
        var failing = recorder!.ToHistory();
        failure ??= string.Join("\n", report.BugReports) + "\n" + failing.RenderTimeline();
        return new(true, iterations, failing, failure, engine.ReproducibleTrace, judged);
    }

    /// <summary>
    /// One iteration: the threads are started as controlled operations (Coyote's pattern for threads it
    /// did not create: register, start, hand over at <see cref="Operation.OnStarted"/>), run to the end,
    /// and joined. A thread that throws stops there; its op stays pending and the exception is reported.
    /// </summary>
    static ((int Thread, Exception Exception)? Error, TState? Final) RunOnce<TObject, TState, TOp, TResult>(
        ConcurrentSubject<TObject, TState, TOp, TResult> subject, ConcurrentProgram<TOp> program, HistoryRecorder<TOp, TResult> recorder)
        where TState : notnull
    {
        var target = subject.Create();
        try
        {
            (int, Exception)? error = null;
            var ids = new List<ulong>();
            var threads = new List<Thread>();
            for (int t = 0; t < program.Threads.Count; t++)
            {
                int thread = t;
                var ops = program.Threads[t];
                ulong id = Operation.CreateNext() ?? throw new InvalidOperationException("not inside a Coyote test iteration");
                var worker = new Thread(() =>
                {
                    try
                    {
                        Operation.OnStarted(id);
                        foreach (var op in ops)
                        {
                            int at = recorder.Invoke(thread, op);
                            TResult result;
                            try { result = subject.Apply(target, thread, op); }
                            catch (Exception e) when (e is not ThreadInterruptedException) { error ??= (thread, e); break; }
                            recorder.Respond(at, result);
                        }
                        Operation.OnCompleted();
                        Operation.ScheduleNext();
                    }
                    catch (ThreadInterruptedException)
                    {
                        // Coyote interrupts the threads it controls when an iteration ends in a bug.
                    }
                }) { IsBackground = true, Name = $"coyote T{t}" };
                ids.Add(id);
                threads.Add(worker);
                Operation.Start(id);
                worker.Start();
                Operation.ScheduleNext();
            }
            foreach (var id in ids) Operation.PauseUntilCompleted(id);
            foreach (var worker in threads) worker.Join();
            var final = subject.ObserveFinal is { } observe && error is null ? observe(target) : default;
            return (error, final);
        }
        finally
        {
            (target as IDisposable)?.Dispose();
        }
    }
}
