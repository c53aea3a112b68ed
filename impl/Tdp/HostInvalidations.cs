using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// The host side of the MMU notifiers (docs/tdp-model.md, "MMU notifiers"), as both TDP MMUs keep it: the
/// open invalidations in the order they started, KVM's retry range (mmu_invalidate_range_start/_end, the hull
/// of every range since the count was last 0), the sequence (mmu_invalidate_seq) and the moved host pages.
/// Changed only by the notifier operations (single-threaded, or under mmu_lock for write); a fault reads
/// <see cref="Sequence"/> and <see cref="Migrated"/> without the lock, so both are published with release
/// stores and <see cref="Migrated"/> is an immutable snapshot, replaced whole.
/// </summary>
internal sealed class HostInvalidations
{
    /// <summary>A moved page sits at its home frame with this bit flipped (the spec's TdpState.MigratedFrameBit).</summary>
    public const ulong MigratedFrameBit = 1UL << 35;

    private readonly List<(ulong Start, ulong End)> _open = new();
    private int _inProgress; // _open.Count, in a field of its own: the fault paths read it first
    private ulong _sequence;
    private HostFrameRanges _migrated = HostFrameRanges.Empty;

    /// <summary>Invalidations in progress (KVM's mmu_invalidate_in_progress).</summary>
    public int InProgress
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _inProgress;
    }

    public ulong RetryStart { get; private set; }

    public ulong RetryEnd { get; private set; }

    public ulong Sequence
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _sequence);
    }

    public HostFrameRanges Migrated
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _migrated);
    }

    /// <summary>Nothing in progress and no page moved: the fault paths need not look here at all.</summary>
    public bool Quiet
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _inProgress == 0 && _migrated.IsEmpty;
    }

    public IReadOnlyList<(ulong Start, ulong End)> Open => _open;

    /// <summary>kvm_mmu_invalidate_begin and kvm_mmu_invalidate_range_add.</summary>
    public void Begin(ulong start, ulong end)
    {
        (RetryStart, RetryEnd) = _open.Count == 0 ? (start, end) : (Math.Min(RetryStart, start), Math.Max(RetryEnd, end));
        _open.Add((start, end));
        _inProgress = _open.Count;
    }

    /// <summary>
    /// kvm_mmu_invalidate_end for the oldest open [start, end): the pages of <paramref name="moved"/> (home
    /// frames) go to their other frame, then the sequence is bumped (release: a fault that sees the new
    /// sequence sees the moved pages), then the count drops. False, changing nothing, when none is open.
    /// </summary>
    public bool End(ulong start, ulong end, HostFrameRanges moved)
    {
        int open = _open.IndexOf((start, end));
        if (open < 0)
            return false;
        Volatile.Write(ref _migrated, _migrated.SymmetricDifference(moved));
        Volatile.Write(ref _sequence, _sequence + 1);
        _open.RemoveAt(open);
        _inProgress = _open.Count;
        if (_inProgress == 0)
            (RetryStart, RetryEnd) = (0, 0);
        return true;
    }

    /// <summary>mmu_invalidate_retry_gfn's in-progress half: an invalidation is open and its retry range holds <paramref name="gfn"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool MustRetry(ulong gfn) => _inProgress != 0 && gfn - RetryStart < RetryEnd - RetryStart;

    /// <summary>
    /// The spec's HostPagesSettled: a leaf over gfns [gfn, +frames) with home frames from <paramref name="homePfn"/>
    /// stays clear of the retry range, and its pages are all home or all moved.
    /// </summary>
    public bool Settled(HostFrameRanges migrated, ulong gfn, ulong homePfn, ulong frames)
    {
        if (_open.Count != 0 && gfn < RetryEnd && RetryStart < gfn + frames)
            return false;
        ulong moved = migrated.CountIn(homePfn, homePfn + frames);
        return moved == 0 || moved == frames;
    }
}

/// <summary>
/// An immutable set of host frames as sorted, disjoint, non-adjacent [start, end) ranges (flattened pairs).
/// Built only by the notifier's End; the faults only read it.
/// </summary>
internal sealed class HostFrameRanges
{
    private readonly ulong[] _bounds; // start0, end0, start1, end1, ... ascending

    private HostFrameRanges(ulong[] bounds) => _bounds = bounds;

    public static readonly HostFrameRanges Empty = new([]);

    public bool IsEmpty
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _bounds.Length == 0;
    }

    public int Count => _bounds.Length / 2;

    public (ulong Start, ulong End) this[int i] => (_bounds[2 * i], _bounds[2 * i + 1]);

    /// <summary>The union of <paramref name="ranges"/> (any order, overlapping or not, empty ones ignored).</summary>
    public static HostFrameRanges Of(IEnumerable<(ulong Start, ulong End)> ranges)
    {
        var merged = new List<ulong>();
        foreach (var (s, e) in ranges.Where(r => r.Start < r.End).OrderBy(r => r.Start))
        {
            if (merged.Count > 0 && s <= merged[^1])
                merged[^1] = Math.Max(merged[^1], e);
            else
            {
                merged.Add(s);
                merged.Add(e);
            }
        }
        return merged.Count == 0 ? Empty : new HostFrameRanges([.. merged]);
    }

    /// <summary>Frames in exactly one of the two sets: a point's parity flips at every bound of either, so the
    /// bounds that occur an odd number of times, in order, pair up into the result's ranges.</summary>
    public HostFrameRanges SymmetricDifference(HostFrameRanges other)
    {
        var all = _bounds.Concat(other._bounds).Order().ToList();
        var odd = new List<ulong>();
        for (int i = 0; i < all.Count;)
        {
            int j = i;
            while (j < all.Count && all[j] == all[i])
                j++;
            if ((j - i) % 2 == 1)
                odd.Add(all[i]);
            i = j;
        }
        Debug.Assert(odd.Count % 2 == 0, "bounds of range sets pair up");
        return odd.Count == 0 ? Empty : new HostFrameRanges([.. odd]);
    }

    /// <summary>The home frame's current frame: itself, or with <see cref="HostInvalidations.MigratedFrameBit"/> flipped once moved.</summary>
    public ulong Current(ulong homePfn) => Contains(homePfn) ? homePfn ^ HostInvalidations.MigratedFrameBit : homePfn;

    public bool Contains(ulong frame)
    {
        ulong[] b = _bounds;
        for (int i = 0; i < b.Length; i += 2)
        {
            if (frame < b[i])
                return false;
            if (frame < b[i + 1])
                return true;
        }
        return false;
    }

    /// <summary>How many frames of [start, end) the set holds.</summary>
    public ulong CountIn(ulong start, ulong end)
    {
        ulong n = 0;
        ulong[] b = _bounds;
        for (int i = 0; i < b.Length; i += 2)
        {
            ulong s = Math.Max(start, b[i]), e = Math.Min(end, b[i + 1]);
            if (s < e)
                n += e - s;
        }
        return n;
    }
}
