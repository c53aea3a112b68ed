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
    public static void Yield(SchedulePointKind what) => SchedulingPoint.Interleave();
}
