using System.Collections.Immutable;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// How a <see cref="ConcurrentTdpCase"/> went: the schedules explored (and how many ran to the end and were
/// judged), and on failure the strategy that found it, the failing history, the explanation and the Coyote
/// trace of that schedule (which a case's <see cref="ConcurrentTdpCase.Schedule"/> replays).
/// </summary>
public sealed record ConcurrentTdpVerdict(
    bool Failed, int Schedules, int Checked, string Strategy, History<TdpOp, TdpLinResult>? History, string? Failure, string? Trace)
{
    public override string ToString() => Failed
        ? $"{(Failure?.StartsWith("no forward progress", StringComparison.Ordinal) == true ? "no forward progress" : "not linearizable")} in schedule {Schedules} ({Strategy})"
        : $"linearizable in {Schedules} schedules ({Checked} judged)";
}

/// <summary>What one explored schedule did, as the harness saw it from outside the MMU (for coverage).</summary>
public sealed class ConcurrentRunEvents
{
    /// <summary>Accesses that answered Retry; of those, right after a compare-and-exchange, and right after a read (a frozen entry).</summary>
    public int Retries, RetriesAfterExchange, RetriesAfterRead;
    /// <summary>An op ended while a table it or another unlinked still waited for a walker to leave.</summary>
    public bool FreeDeferred;
    /// <summary>Tables unlinked under the read side, and of those freed, by the end of the schedule.</summary>
    public long TablesRetired, TablesFreed;
    /// <summary>Accesses that answered Retry while an invalidation covering their gfn was open, or after the invalidation sequence moved during them.</summary>
    public int RetriesAfterInvalidation;
    /// <summary>Write faults the lockless fast path answered, and those it left to the slow path, by the end of the schedule.</summary>
    public long FastFaultsTaken, FastFaultsRefused;
    /// <summary>Range walks' restarts after dropping mmu_lock (ConcurrentTdpMmu.Yield.cs).</summary>
    public long RangeWalkRestarts;
    /// <summary>Accesses a vCPU's TLB answered with a translation the tables no longer held (its flush not yet served).</summary>
    public int StaleTlbHits;
    /// <summary>Translations the vCPUs' TLBs dropped serving remote flush requests, since the setup.</summary>
    public long TlbEntriesFlushed;
    /// <summary>Table links the collapsible zap dropped under the read side (dirty logging turned off; ConcurrentTdpMmu.Collapsible.cs).</summary>
    public long CollapsibleLinksZapped;
    /// <summary>Compare-and-exchanges dirty logging's write-protection lost to a racing change of the leaf (<see cref="RangeWalkWatch"/>).</summary>
    public int WriteProtectExchangesLost;
    /// <summary>Host unmaps that ran inside another thread's zap yield, leaves it had cleared already gone (<see cref="RangeWalkWatch"/>).</summary>
    public int UnmapsInsideZapYield;
    /// <summary>The most restarts one op's range walks took in the schedule, and that op's bound (<see cref="RangeWalkWatch.MaxRestarts"/>).</summary>
    public long MostWalkRestarts, MostWalkRestartsBound;
}

/// <summary>
/// A situation of the concurrent paths (docs/coverage.md) and when a schedule reached it. Adding one is a
/// line in <see cref="ConcurrentCoverage.All"/>.
/// </summary>
public sealed record ConcurrentSituation(string Name, Func<ConcurrentRunEvents, bool> Reached);

/// <summary>
/// The concurrent family's situations. Unlike the sequential families' (judged on the spec alone), these are
/// judged from what each explored schedule did: the answers, the last schedule point before a Retry, the
/// MMU's table-retirement counters. Each is counted once per schedule that reached it.
/// </summary>
public static class ConcurrentCoverage
{
    public static readonly IReadOnlyList<ConcurrentSituation> All =
    [
        new("concurrent path: fault retried", e => e.Retries > 0),
        new("concurrent path: cmpxchg lost and retried", e => e.RetriesAfterExchange > 0),
        new("concurrent path: frozen entry seen", e => e.RetriesAfterRead > 0),
        new("concurrent path: table unlinked under the read lock", e => e.TablesRetired > 0),
        new("concurrent path: deferred free (a table freed after a walker left)", e => e.FreeDeferred && e.TablesFreed > 0),
        new("concurrent path: fault retried after an invalidation", e => e.RetriesAfterInvalidation > 0),
        new("concurrent path: fast fault taken", e => e.FastFaultsTaken > 0),
        new("concurrent path: fast fault refused", e => e.FastFaultsRefused > 0),
        new("concurrent path: range walk yielded and restarted", e => e.RangeWalkRestarts > 0),
        new("concurrent path: remote flush served", e => e.TlbEntriesFlushed > 0),
        new("concurrent path: collapsible zap under the read lock", e => e.CollapsibleLinksZapped > 0),
        new(StaleTlbEntryUsed, e => e.StaleTlbHits > 0),
        new(WriteProtectExchangeLost, e => e.WriteProtectExchangesLost > 0),
        new(UnmapInsideZapYield, e => e.UnmapsInsideZapYield > 0),
    ];

    /// <summary>A host unmap ran while another thread's zap had dropped mmu_lock to yield (ConcurrentTdpGen.Zaps.cs).</summary>
    public const string UnmapInsideZapYield = "concurrent path: host unmap inside a zap's yield";

    /// <summary>A vCPU's TLB answered with a translation the tables no longer grant (its flush request not yet set or served).</summary>
    public const string StaleTlbEntryUsed = "concurrent path: stale TLB entry used";

    /// <summary>Dirty logging's write-protection lost its compare-and-exchange to a racing write that set D, and read the leaf again.</summary>
    public const string WriteProtectExchangeLost = "concurrent path: write-protection cmpxchg lost and retried";

    /// <summary>
    /// What `tdp-concurrent` requires: every situation but the two narrow windows its general programs seldom
    /// reach (0 and 3 of 40 cases), which `tdp-concurrent-races` draws for (<see cref="RacesNames"/>).
    /// </summary>
    public static IReadOnlyList<string> GeneralNames { get; } = [.. All.Select(s => s.Name).Except([StaleTlbEntryUsed, WriteProtectExchangeLost, UnmapInsideZapYield])];

    /// <summary>What `tdp-concurrent-races` requires (ConcurrentTdpGen.Races.cs).</summary>
    public static IReadOnlyList<string> RacesNames { get; } =
    [
        "concurrent path: range walk yielded and restarted", "concurrent path: remote flush served", StaleTlbEntryUsed, WriteProtectExchangeLost,
    ];

    /// <summary>What `tdp-concurrent-zaps` requires (ConcurrentTdpGen.Zaps.cs).</summary>
    public static IReadOnlyList<string> ZapsNames { get; } =
    [
        "concurrent path: collapsible zap under the read lock", "concurrent path: range walk yielded and restarted", "concurrent path: remote flush served",
        StaleTlbEntryUsed, UnmapInsideZapYield,
    ];

    public static IReadOnlyList<string> Names { get; } = [.. All.Select(s => s.Name)];
}

/// <summary>
/// Runs a <see cref="ConcurrentTdpCase"/>: its program on the concurrent TDP MMU under Coyote's scheduler, each
/// history judged against the spec (<see cref="TdpLinSpec"/>) with the final state, and every table page the
/// MMU holds linked in a tree once the threads are done (no table leaked by a race). The same case explores
/// the same schedules in the same order.
/// </summary>
public static class ConcurrentTdpCheck
{
    /// <summary>Whether the concurrent MMU runs <paramref name="op"/> from a thread (<see cref="ConcurrentTdpVm{TFormat, TSched}.Apply"/>).</summary>
    public static bool RunsConcurrently(TdpOp op) =>
        op is TdpOp.AccessGpa or TdpOp.ZapRange or TdpOp.ZapAll or TdpOp.SetMaxPageSize or TdpOp.SetDirtyLogging or TdpOp.CreateSlot
            or TdpOp.HostInvalidateStart or TdpOp.HostInvalidateEnd or TdpOp.GetDirtyLog
            or TdpOp.Age or TdpOp.TestAge or TdpOp.TrackWrites or TdpOp.UntrackWrites;

    /// <summary>Explores (or, with a recorded schedule, replays) the case; <paramref name="hit"/> hears each situation a judged schedule reached.</summary>
    public static ConcurrentTdpVerdict Run(ConcurrentTdpCase c, Action<string>? hit = null) => Run(c, hit, null);

    /// <summary>As <see cref="Run(ConcurrentTdpCase, Action{string})"/>; <paramref name="events"/> also hears each judged schedule's events.</summary>
    public static ConcurrentTdpVerdict Run(ConcurrentTdpCase c, Action<string>? hit, Action<ConcurrentRunEvents>? events) => c.Config.Format switch
    {
        TdpFormat.Ept => Run<EptFormat>(c, hit, events),
        _ => Run<Stage2Format>(c, hit, events),
    };

    static ConcurrentTdpVerdict Run<TFormat>(ConcurrentTdpCase c, Action<string>? hit, Action<ConcurrentRunEvents>? heard) where TFormat : struct, IPteFormat
    {
        DebugAssertions.ThrowOnFailure(); // a DEBUG check in impl/ fails the schedule, not the process
        var events = new ConcurrentRunEvents();
        long flushedInSetup = 0;
        RangeWalkWatch? watch = null;
        var everyOp = c.Setup.Concat(c.Program.Threads.SelectMany(t => t)).ToList();
        var subject = ConcurrentTdpSubject.Create<TFormat, CoyoteSparseSchedulePoint>(c.Config, c.Setup, c.Program.Threads.Count, vm =>
        {
            events.TablesRetired = vm.Mmu.DeferredTablesRetired;
            events.TablesFreed = vm.Mmu.DeferredTablesFreed;
            events.FastFaultsTaken = vm.Mmu.FastFaultsTaken;
            events.FastFaultsRefused = vm.Mmu.FastFaultsRefused;
            events.RangeWalkRestarts = vm.Mmu.RangeWalkRestarts;
            events.TlbEntriesFlushed = vm.Mmu.TlbEntriesFlushed - flushedInSetup;
            events.CollapsibleLinksZapped = vm.Mmu.CollapsibleLinksZapped;
            if (watch is not null)
            {
                (events.WriteProtectExchangesLost, events.MostWalkRestarts, events.MostWalkRestartsBound) = (watch.WriteProtectExchangesLost, watch.MostRestarts, watch.BoundOfMost);
                events.UnmapsInsideZapYield = watch.UnmapsInsideZapYield;
            }
            heard?.Invoke(events);
            if (hit is not null)
                foreach (var s in ConcurrentCoverage.All)
                    if (s.Reached(events)) hit(s.Name);
        }, c.SetupOnEveryVcpu);
        var create = subject.Create;
        var apply = subject.Apply;
        var observe = subject.ObserveFinal!;
        subject = subject with
        {
            Create = () =>
            {
                events = new ConcurrentRunEvents();
                var vm = create();
                flushedInSetup = vm.Mmu.TlbEntriesFlushed;
                watch = new RangeWalkWatch(c.Program.Threads.Count, () => vm.Mmu.RangeWalkRestarts, () => vm.Mmu.RangeWalkExchangesLost,
                    op => RangeWalkWatch.MaxRestarts(op, c.Config, everyOp));
                return vm;
            },
            Apply = (vm, thread, op) =>
            {
                ulong sequence = vm.Mmu.InvalidateSequence;
                long hits = vm.Vcpu(thread).TlbHitCount;
                watch!.Enter(thread, op);
                TdpLinResult result;
                try { result = apply(vm, thread, op); }
                finally { watch.Leave(thread); }
                // A TLB hit is answered with no schedule point after it: the tables read now are the ones it did not walk.
                if (op is TdpOp.AccessGpa access && vm.Vcpu(thread).TlbHitCount != hits && IsStale(vm, access, result))
                    events.StaleTlbHits++;
                if (result.IsRetry)
                {
                    events.Retries++;
                    // Coyote runs one thread at a time: the notifier is read here as a quiescent MMU's.
                    if (op is TdpOp.AccessGpa a && (vm.Mmu.InvalidateSequence != sequence || InvalidationCovers(vm.Mmu.InvalidationsInProgress, a.Gpa >> 12)))
                        events.RetriesAfterInvalidation++;
                    // Which shared access the op last gave way at: an exchange it then lost, or a read of a frozen entry.
                    if (CoyoteSparseSchedulePoint.LastEntryAccess == SchedulePointKind.SpteExchange) events.RetriesAfterExchange++;
                    if (CoyoteSparseSchedulePoint.LastEntryAccess == SchedulePointKind.SpteRead) events.RetriesAfterRead++;
                }
                if (vm.Mmu.DeferredTablesPending > 0) events.FreeDeferred = true;
                return result;
            },
            ObserveFinal = vm => Leaked(vm) is { } leak ? TdpLinState.Leaked(leak) : observe(vm),
        };
        if (c.Schedule is { } schedule)
            return Verdict(ScheduleExploration.Replay(subject, c.Program, schedule), 0, 0, "recorded schedule");
        var pct = ScheduleExploration.Explore(subject, c.Program, new ExplorationSettings(c.Iterations, c.ScheduleSeed, ScheduleStrategy.Prioritization));
        if (pct.Failed) return Verdict(pct, 0, 0, "PCT");
        var random = ScheduleExploration.Explore(subject, c.Program, new ExplorationSettings(c.Iterations, c.ScheduleSeed, ScheduleStrategy.Random));
        return Verdict(random, pct.Iterations, pct.Checked, "random");
    }

    static ConcurrentTdpVerdict Verdict(ExplorationResult<TdpOp, TdpLinResult> r, int before, int judgedBefore, string strategy) =>
        new(r.Failed, before + r.Iterations, judgedBefore + r.Checked, strategy, r.FailingHistory, r.Failure, r.ReproducibleTrace);

    /// <summary>Whether <paramref name="result"/>, a TLB hit, is not what the tables grant the access now.</summary>
    static bool IsStale<TFormat, TSched>(ConcurrentTdpVm<TFormat, TSched> vm, TdpOp.AccessGpa access, TdpLinResult result)
        where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint =>
        result.Result is not TdpResult.Mapped m
        || !vm.Mmu.TryTranslate(access.Gpa, out ulong hpa, out int shift, out bool writable)
        || hpa != m.Hpa || shift != m.Size.Shift() || (access.Type == AccessType.Write && !writable);

    static bool InvalidationCovers(IReadOnlyList<(ulong StartGfn, ulong EndGfn)> open, ulong gfn)
    {
        foreach (var (start, end) in open)
            if (start <= gfn && gfn < end) return true;
        return false;
    }

    /// <summary>Table pages the MMU holds but no tree links (a table a race left behind), or null when there are none.</summary>
    internal static string? Leaked<TFormat, TSched>(ConcurrentTdpVm<TFormat, TSched> vm) where TFormat : struct, IPteFormat where TSched : struct, ISchedulePoint
    {
        long linked = 0;
        vm.Mmu.VisitPages((_, _) => linked++);
        long held = vm.Mmu.TablePages;
        return held == linked ? null : $"{held} table pages held, {linked} linked in the trees";
    }

    /// <summary>The case's program as the checker's op list (thread by thread), for reports.</summary>
    public static ImmutableArray<TdpOp> Flatten(ConcurrentTdpCase c) => [.. c.Program.Threads.SelectMany(t => t)];
}
