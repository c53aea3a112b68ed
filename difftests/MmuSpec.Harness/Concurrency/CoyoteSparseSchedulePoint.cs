using MmuSpec.Impl.Concurrency;
using Microsoft.Coyote.Runtime;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// The schedule points of the `tdp-concurrent` property: <see cref="CoyoteSchedulePoint"/>'s, except that a long run
/// of entry exchanges with nothing else between (tearing down a removed table: 512 exchanges) gives way only at its
/// first <see cref="RunHead"/> exchanges and then every <see cref="RunStride"/>th. Another thread still runs inside the
/// teardown (and reads the frozen entries), but a thread the strategy stops just before a read can now stay stopped
/// across a whole replacement, its teardown and its free (about 20 decisions rather than 520): the window in which a
/// table freed too early is read (docs/concurrency-testing.md). Coyote explores only the points that interleave, so
/// the skipped ones are not schedule decisions at all.
/// </summary>
public readonly struct CoyoteSparseSchedulePoint : ISchedulePoint
{
    public const int RunHead = 4, RunStride = 128;

    [ThreadStatic] static SchedulePointKind last;
    [ThreadStatic] static int exchanges;

    /// <summary>As <see cref="CoyoteSchedulePoint.LastEntryAccess"/>.</summary>
    public static SchedulePointKind LastEntryAccess => last;

    public static void Yield(SchedulePointKind what)
    {
        RangeWalkWatch.AtSchedulePoint(what); // counts what the thread did since the last point; no decision of its own
        if (what is SchedulePointKind.SpteRead or SchedulePointKind.SpteExchange) last = what;
        exchanges = what == SchedulePointKind.SpteExchange ? exchanges + 1 : 0;
        if (exchanges > RunHead && exchanges % RunStride != 0) return;
        SchedulingPoint.Interleave();
    }
}
