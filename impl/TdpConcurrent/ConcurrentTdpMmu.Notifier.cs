using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// MMU-notifier invalidation for many vCPUs (docs/tdp-concurrency.md, "MMU notifiers"). Start and End take
/// mmu_lock for write, as KVM's TDP MMU zaps for a notifier under the write side. A fault follows KVM's order
/// (kvm_mmu_faultin_pfn, then is_page_fault_stale under the lock): before the lock it reads the sequence, then
/// (acquire after it) where the host pages are, and may be preempted there, as the host page lookup may sleep;
/// under the read side it retries if an invalidation covering its gfn is in progress or the sequence moved, so
/// a frame looked up before an End is never installed after it (ConcurrentTdpMmu.Fault.cs).
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched> : ITdpHostNotifier
{
    private readonly HostInvalidations _notifier = new();

    public TdpStatus HostInvalidateStart(ulong startGfn, ulong endGfn)
    {
        EnterWrite();
        try
        {
            if (startGfn >= endGfn || endGfn > _gfnLimit)
                return Reject($"invalidation [0x{startGfn:X}, 0x{endGfn:X}) is empty or beyond 2^{_gpaBits - PageShift} frames");
            _notifier.Begin(startGfn, endGfn); // counted before the zap: a fault that follows sees it (kvm_mmu_invalidate_begin)
            ZapLeafs(startGfn, endGfn);
            return TdpStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    public TdpStatus HostInvalidateEnd(ulong startGfn, ulong endGfn)
    {
        EnterWrite();
        try
        {
            HostFrameRanges moved = HostFrameRanges.Of(
                from s in _slots.All
                where s.BaseGfn < endGfn && startGfn < s.EndGfn
                let first = Math.Max(s.BaseGfn, startGfn)
                select (s.HostPfnBase + (first - s.BaseGfn), s.HostPfnBase + (Math.Min(s.EndGfn, endGfn) - s.BaseGfn)));
            if (!_notifier.End(startGfn, endGfn, moved))
                return Reject($"no host invalidation of [0x{startGfn:X}, 0x{endGfn:X}) is in progress");
            return TdpStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    // The queries below are for a quiescent MMU, like VisitPages.
    public IReadOnlyList<(ulong StartGfn, ulong EndGfn)> InvalidationsInProgress => [.. _notifier.Open];

    public (ulong StartGfn, ulong EndGfn) InvalidateRetryRange => (_notifier.RetryStart, _notifier.RetryEnd);

    public ulong InvalidateSequence => _notifier.Sequence;

    public IReadOnlyList<(ulong Start, ulong End)> MigratedHostFrames
    {
        get
        {
            HostFrameRanges m = _notifier.Migrated;
            return [.. Enumerable.Range(0, m.Count).Select(i => m[i])];
        }
    }

    /// <summary>A memslot update waits for open invalidations in KVM (kvm_swap_active_memslots); here it is refused.</summary>
    private string? SlotUpdateWaits() =>
        _notifier.InProgress != 0 ? $"a memslot update waits for the {_notifier.InProgress} host invalidation(s) in progress" : null;

    /// <summary>
    /// What a fault learns before taking mmu_lock (KVM: mmu_seq = kvm->mmu_invalidate_seq; smp_rmb(); then the
    /// host page lookup): the sequence, then the moved-page snapshot, read in that order with acquire loads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private (ulong Sequence, HostFrameRanges Migrated) ReadHostPages()
    {
        ulong sequence = _notifier.Sequence;
        HostFrameRanges migrated = _notifier.Migrated;
        TSched.Yield(SchedulePointKind.Other); // the lookup may sleep: an invalidation can start and end here
        return (sequence, migrated);
    }

    /// <summary>
    /// is_page_fault_stale under the read side (mmu_invalidate_retry_gfn): an invalidation covering the gfn is
    /// in progress, or one ended since the fault read the sequence (its frame may be stale).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FaultIsStale(ulong gfn, ulong sequence) =>
        _notifier.MustRetry(gfn) || _notifier.Sequence != sequence;

    /// <summary>The target level lowered until its host pages are settled (the spec's HostPagesSettled), when the notifier is not quiet.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int SettledLevel(HostMemslot slot, ulong gfn, int level, HostFrameRanges migrated)
    {
        for (; level > 1; level--)
        {
            ulong first = AlignDown(gfn, level);
            if (_notifier.Settled(migrated, first, slot.HostPfnBase + (first - slot.BaseGfn), FramesPerEntry(level)))
                break;
        }
        return level;
    }
}
