using System.Collections.Immutable;
using System.Diagnostics;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>
/// The host side of the MMU notifiers (virt/kvm/kvm_main.c kvm_mmu_notifier_invalidate_range_start/_end,
/// kvm_mmu_invalidate_begin/_end, include/linux/kvm_host.h mmu_invalidate_retry_gfn): the invalidations
/// in progress in the order they started, the range faults must retry in, the sequence number, and which
/// host pages have moved. docs/tdp-model.md, "MMU notifiers".
/// </summary>
/// <param name="InProgress">The open invalidations, oldest first (an End closes the oldest equal one).</param>
/// <param name="RetryRange">
/// KVM's mmu_invalidate_range_start/_end: the hull of every range started since the count was last 0. It
/// grows with each Start and is dropped only when the last End closes (kvm_mmu_invalidate_range_add), so it
/// can hold gfns no open invalidation names. Empty while nothing is in progress.
/// </param>
/// <param name="Sequence">KVM's mmu_invalidate_seq: bumped by every End.</param>
/// <param name="MigratedFrames">Home host frames whose page lives at its other frame (<see cref="TdpState.HostFrame"/>).</param>
public sealed record HostNotifierState(ImmutableList<GfnRange> InProgress, GfnRange RetryRange, ulong Sequence, GfnRanges MigratedFrames)
{
    public static HostNotifierState Initial { get; } = new(ImmutableList<GfnRange>.Empty, default, 0, GfnRanges.Empty);

    public bool Equals(HostNotifierState? other) =>
        other is not null && InProgress.SequenceEqual(other.InProgress) && RetryRange == other.RetryRange
        && Sequence == other.Sequence && MigratedFrames.Equals(other.MigratedFrames);

    public override int GetHashCode() => HashCode.Combine(InProgress.Count, Sequence);

    public override string ToString() =>
        $"{InProgress.Count} in progress [{string.Join(", ", InProgress)}], retry range {(InProgress.IsEmpty ? "none" : RetryRange)}, " +
        $"sequence {Sequence}, migrated frames {MigratedFrames}";
}

public sealed partial record TdpState
{
    /// <summary>
    /// The host's reason to invalidate, made observable: every completed invalidation migrates the pages of
    /// its range, each to its other frame, the home frame (<see cref="HostMemslot.HostPfn"/>) with this bit
    /// flipped (and back on the next one). Bit 35 stays inside both formats' host-frame limits (stage-2:
    /// 2^36) and is a multiple of every leaf size, so a huge leaf over pages that moved together stays
    /// contiguous and aligned. **model:** the other frame may be another slot's home frame; nothing reads
    /// host memory through leaf frames, so an alias changes no answer.
    /// </summary>
    public const ulong MigratedFrameBit = 1UL << 35;

    public HostNotifierState Notifier { get; init; } = HostNotifierState.Initial;

    /// <summary>The host frame that backs <paramref name="gfn"/> of <paramref name="slot"/> now: the home frame, or its other one once migrated.</summary>
    public ulong HostFrame(HostMemslot slot, ulong gfn)
    {
        ulong home = slot.HostPfn(gfn);
        return Notifier.MigratedFrames.Contains(home) ? home ^ MigratedFrameBit : home;
    }

    /// <summary>
    /// invalidate_range_start (kvm_mmu_notifier_invalidate_range_start): under mmu_lock for write, KVM
    /// counts the invalidation and widens the retry range (kvm_mmu_invalidate_begin,
    /// kvm_mmu_invalidate_range_add), then unmaps the range (kvm_unmap_gfn_range -> kvm_tdp_mmu_unmap_gfn_range),
    /// with the flushes of a zap. Ranges may overlap open ones.
    /// </summary>
    TdpStepped InvalidateStart(ulong start, ulong end)
    {
        if (start >= end || end > Config.GfnLimit)
            return Reject($"invalidation [{Bits.Hex(start)}, {Bits.Hex(end)}) is empty or beyond the guest-physical space");
        var range = new GfnRange(start, end);
        var n = Notifier;
        var retry = n.InProgress.IsEmpty ? range : new GfnRange(Math.Min(n.RetryRange.Start, start), Math.Max(n.RetryRange.End, end));
        return Done(ZapLeaves(start, end) with { Notifier = n with { InProgress = n.InProgress.Add(range), RetryRange = retry } });
    }

    /// <summary>
    /// invalidate_range_end (kvm_mmu_invalidate_end): the host pages of the range now sit at their other
    /// frame; the sequence is bumped and the count dropped (the retry range goes with the last one). An End
    /// that matches no open Start is rejected. Nothing is unmapped: Start removed every leaf over the range,
    /// and since then faults there retried and no fault elsewhere mapped over it (<see cref="HostPagesSettled"/>).
    /// </summary>
    TdpStepped InvalidateEnd(ulong start, ulong end)
    {
        var range = new GfnRange(start, end);
        var n = Notifier;
        int open = n.InProgress.IndexOf(range);
        if (open < 0) return Reject($"no host invalidation of {range} is in progress");
        Debug.Assert(!Leaves().Any(l => l.Leaf.Overlaps(start, end)), "a leaf over a range under invalidation");
        var moved = HomeFrames(range);
        var migrated = n.MigratedFrames.Except(moved).Union(moved.Except(n.MigratedFrames));
        var left = n.InProgress.RemoveAt(open);
        return Done(this with
        {
            Notifier = new HostNotifierState(left, left.IsEmpty ? default : n.RetryRange, n.Sequence + 1, migrated),
        });
    }

    /// <summary>The home host frames of every slot gfn in <paramref name="range"/>.</summary>
    GfnRanges HomeFrames(GfnRange range) => GfnRanges.Of(
        from s in Slots.Values
        where s.Overlaps(range.Start, range.End)
        let first = Math.Max(s.BaseGfn, range.Start)
        select new GfnRange(s.HostPfn(first), s.HostPfn(Math.Min(s.EndGfn, range.End))));

    /// <summary>
    /// mmu_invalidate_retry_gfn: a fault on <paramref name="gfn"/> must retry while an invalidation is in
    /// progress and the retry range holds it (KVM checks it under mmu_lock before mapping, is_page_fault_stale).
    /// </summary>
    bool MustRetry(ulong gfn) => !Notifier.InProgress.IsEmpty && Notifier.RetryRange.Contains(gfn);

    /// <summary>
    /// A leaf may map [<paramref name="start"/>, +<paramref name="frames"/>) of <paramref name="slot"/> only if its
    /// host pages are settled: none in the retry range of invalidations in progress, and all at their home
    /// frame or all moved (contiguous host frames). **model:** KVM reads the level from the host's own page
    /// tables (host_pfn_mapping_level), where a huge page under change is not mapped huge; the model says
    /// it directly, and so no leaf ever reaches into a range under invalidation.
    /// </summary>
    bool HostPagesSettled(HostMemslot slot, ulong start, ulong frames)
    {
        var n = Notifier;
        if (!n.InProgress.IsEmpty && n.RetryRange.Overlaps(GfnRange.OfCount(start, frames))) return false;
        if (n.MigratedFrames.IsEmpty) return true;
        var home = GfnRanges.Of(GfnRange.OfCount(slot.HostPfn(start), frames));
        ulong stayed = home.Except(n.MigratedFrames).Count;
        return stayed == 0 || stayed == frames;
    }

    /// <summary>
    /// Where host memory keeps the bytes of <paramref name="gpa"/> (a gpa in a slot): its home frame.
    /// Migration copies a page, so its contents stay the VMM's at the same place (host memory is keyed as
    /// the VMM sees it), whichever frame the leaf names. Before any migration this is the mapped hpa.
    /// </summary>
    ulong HomeHpa(ulong gpa)
    {
        ulong gfn = (gpa >> 12) & ~Config.DirectBits;
        var slot = Memslots.SlotOf(gfn) ?? throw new InvalidOperationException($"gpa {Bits.Hex(gpa)} was mapped without a slot");
        return (slot.HostPfn(gfn) << 12) | (gpa & 0xFFF);
    }

    /// <summary>
    /// A memslot update while invalidations are in progress waits for them (kvm_swap_active_memslots waits
    /// for mn_active_invalidate_count to drop to 0); a sequential model cannot wait, so it refuses, changing
    /// nothing. So Start and its End always see the same slots.
    /// </summary>
    string? SlotUpdateWaits(TdpOp op) =>
        !Notifier.InProgress.IsEmpty && op is TdpOp.CreateSlot or TdpOp.DeleteSlot or TdpOp.MoveSlot or TdpOp.SetDirtyLogging
            ? $"a memslot update waits for the {Notifier.InProgress.Count} host invalidation(s) in progress"
            : null;
}
