using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Concurrency;

/// <summary>
/// A place where another thread may run: called by the concurrent MMU code just before each access
/// to shared state that can race (an SPTE read or compare-and-exchange, a lock, an epoch). Production
/// code uses <see cref="NoSchedulePoints"/>, which the JIT removes; a systematic concurrency test
/// supplies a type that hands control to its scheduler there (Coyote's controlled scheduler), so the
/// interleavings it explores are exactly those between these points and each is replayable.
/// A static abstract member, as the entry formats are: no interface call, no allocation.
/// </summary>
public interface ISchedulePoint
{
    /// <summary>Another thread may run here. <paramref name="what"/> names the shared access, for traces.</summary>
    static abstract void Yield(SchedulePointKind what);
}

/// <summary>What is about to be touched at a schedule point (for schedule traces and coverage).</summary>
public enum SchedulePointKind
{
    SpteRead,
    SpteExchange,
    LockAcquire,
    LockRelease,
    EpochEnter,
    EpochExit,
    PageFree,
    Other,
    /// <summary>A remote TLB flush request set, or a vCPU entering that serves its requests (ConcurrentTdpMmu.Tlb.cs).</summary>
    TlbRequest,
}

/// <summary>Production: no schedule points; every call inlines to nothing.</summary>
public readonly struct NoSchedulePoints : ISchedulePoint
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Yield(SchedulePointKind what) { }
}
