using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// MMU-notifier invalidation (docs/tdp-model.md, "MMU notifiers"; KVM's kvm_mmu_notifier_invalidate_range_start
/// and _end). Single-threaded, so a fault never sees the sequence move under it: only the in-progress check
/// (mmu_invalidate_retry_gfn) answers Retry here. The fault paths look at <see cref="_notifier"/> only when it
/// is not quiet; the cached small slot is never used while an invalidation is open or for moved pages.
/// </summary>
public sealed partial class TdpMmu<TFormat> : ITdpHostNotifier
{
    private readonly HostInvalidations _notifier = new();

    public TdpStatus HostInvalidateStart(ulong startGfn, ulong endGfn)
    {
        ThrowIfDisposed();
        if (startGfn >= endGfn || endGfn > _gfnLimit)
            return Reject($"invalidation [0x{startGfn:X}, 0x{endGfn:X}) is empty or beyond 2^{_gpaBits - PageShift} frames");
        ForgetCachedTables(); // faults in the range must reach the retry check
        _notifier.Begin(startGfn, endGfn);
        ZapLeafs(startGfn, endGfn);
        return TdpStatus.Ok;
    }

    public TdpStatus HostInvalidateEnd(ulong startGfn, ulong endGfn)
    {
        ThrowIfDisposed();
        ForgetCachedTables(); // host frames change: the small slot's frame arithmetic no longer holds
        if (!_notifier.End(startGfn, endGfn, HomeFrames(startGfn, endGfn)))
            return Reject($"no host invalidation of [0x{startGfn:X}, 0x{endGfn:X}) is in progress");
        return TdpStatus.Ok;
    }

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

    /// <summary>The home host frames of every slot gfn in [start, end).</summary>
    private HostFrameRanges HomeFrames(ulong start, ulong end) =>
        HostFrameRanges.Of(from s in _slots.All
                           where s.BaseGfn < end && start < s.EndGfn
                           let first = Math.Max(s.BaseGfn, start)
                           select (s.HostPfnBase + (first - s.BaseGfn), s.HostPfnBase + (Math.Min(s.EndGfn, end) - s.BaseGfn)));

    /// <summary>A memslot update waits for open invalidations in KVM (kvm_swap_active_memslots); here it is refused.</summary>
    private string? SlotUpdateWaits() =>
        _notifier.InProgress != 0 ? $"a memslot update waits for the {_notifier.InProgress} host invalidation(s) in progress" : null;

    /// <summary>
    /// The leaf level and first host frame of a miss at <paramref name="gfn"/> when the notifier is not quiet:
    /// <paramref name="level"/> lowered until its pages are settled (clear of the retry range, all home or all
    /// moved), and the frame where the first page sits now.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong SettledLeaf(HostMemslot slot, ulong gfn, ref int level)
    {
        HostFrameRanges migrated = _notifier.Migrated;
        for (; level > 1; level--)
        {
            ulong first = AlignDown(gfn, level);
            if (_notifier.Settled(migrated, first, slot.HostPfnBase + (first - slot.BaseGfn), FramesPerEntry(level)))
                break;
        }
        return migrated.Current(slot.HostPfnBase + (AlignDown(gfn, level) - slot.BaseGfn));
    }
}
