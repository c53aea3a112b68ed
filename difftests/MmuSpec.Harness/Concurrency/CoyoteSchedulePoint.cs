using MmuSpec.Impl.Concurrency;
using Microsoft.Coyote.Runtime;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// The test side of the impl's schedule-point seam: at every point the concurrent code names, Coyote's
/// controlled scheduler chooses which logical thread runs next (possibly the same one). Outside a
/// Coyote test iteration the call does nothing, so the same type also runs on real threads.
/// </summary>
public readonly struct CoyoteSchedulePoint : ISchedulePoint
{
    [ThreadStatic] static SchedulePointKind last;

    /// <summary>
    /// The last entry access (an SPTE read or exchange) this thread gave way before. An access that answers
    /// Retry after an exchange lost its compare-and-exchange; after a read, it read a frozen entry (the lock
    /// and epoch points on the way out are not entry accesses; coverage tells the two apart this way, docs/coverage.md).
    /// </summary>
    public static SchedulePointKind LastEntryAccess => last;

    public static void Yield(SchedulePointKind what)
    {
        if (what is SchedulePointKind.SpteRead or SchedulePointKind.SpteExchange) last = what;
        SchedulingPoint.Interleave();
    }
}
