namespace MmuSpec.Impl.Tdp;

/// <summary>
/// MMU-notifier invalidation of a TDP VM (docs/tdp-model.md, "MMU notifiers"): the host changes the pages
/// behind a gfn range between Start and End. Beside <see cref="ITdpVm"/>, which it does not change.
/// </summary>
public interface ITdpHostNotifier
{
    /// <summary>
    /// invalidate_range_start: counts the invalidation, widens the retry range, zaps every leaf overlapping
    /// [startGfn, endGfn) in both roots (flushed as <see cref="ITdpVm.ZapRange"/> flushes). Rejected, changing
    /// nothing, for an empty range or one beyond the gpa space.
    /// </summary>
    TdpStatus HostInvalidateStart(ulong startGfn, ulong endGfn);

    /// <summary>
    /// invalidate_range_end of the oldest open Start of exactly [startGfn, endGfn): the range's host pages move
    /// to their other frame, the sequence is bumped. Rejected, changing nothing, when none is open.
    /// </summary>
    TdpStatus HostInvalidateEnd(ulong startGfn, ulong endGfn);

    /// <summary>The open invalidations, oldest first.</summary>
    IReadOnlyList<(ulong StartGfn, ulong EndGfn)> InvalidationsInProgress { get; }

    /// <summary>The retry range [start, end) while an invalidation is open, else (0, 0).</summary>
    (ulong StartGfn, ulong EndGfn) InvalidateRetryRange { get; }

    /// <summary>KVM's mmu_invalidate_seq.</summary>
    ulong InvalidateSequence { get; }

    /// <summary>The home host frames whose pages moved, as sorted disjoint non-adjacent ranges.</summary>
    IReadOnlyList<(ulong Start, ulong End)> MigratedHostFrames { get; }
}
