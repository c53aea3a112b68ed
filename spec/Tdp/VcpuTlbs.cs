using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>
/// A flush one operation owed (<see cref="TdpTlb.MustFlush"/>) over some gfns of a stale translation, and the
/// latest moment it reaches every vCPU: that operation's return (<see cref="VcpuTlbs.Pending"/> while it has
/// not returned). KVM's kvm_flush_remote_tlbs sets KVM_REQ_TLB_FLUSH on every vCPU and waits until each one in
/// guest mode took it; a vCPU outside guest mode serves it in vcpu_enter_guest before it runs the guest again.
/// </summary>
public readonly record struct PendingFlush(GfnRanges Gfns, long DeliveredBy)
{
    public override string ToString() => DeliveredBy == VcpuTlbs.Pending ? $"{Gfns} (owner still running)" : $"{Gfns} (delivered by {DeliveredBy})";
}

/// <summary>
/// A translation the tables held and hold no longer (<paramref name="Leaf"/> under the mirror or direct root,
/// accessed/dirty left out: a TLB entry caches the mapping and its rights), with the flushes owed since over its gfns.
/// </summary>
public sealed record StaleTranslation(bool Mirror, Spte.Leaf Leaf, ImmutableList<PendingFlush> Flushes)
{
    /// <summary>Whether some flush over <paramref name="gfn"/> had surely reached every vCPU by <paramref name="moment"/>.</summary>
    public bool FlushedBefore(ulong gfn, long moment) => Flushes.Any(f => f.DeliveredBy < moment && f.Gfns.Contains(gfn));

    public bool Equals(StaleTranslation? other) => other is not null && Mirror == other.Mirror && Leaf == other.Leaf && Flushes.SequenceEqual(other.Flushes);

    public override int GetHashCode() => HashCode.Combine(Mirror, Leaf, Flushes.Count);

    public override string ToString() => $"{(Mirror ? "mirror " : "")}{Leaf}" + (Flushes.IsEmpty ? ", never flushed" : $", flushed {string.Join(" and ", Flushes)}");
}

/// <summary>
/// What the vCPUs' TLBs may hold, for TDP (docs/tdp-model.md, "TLB flushes"; docs/tdp-concurrency.md, "Per-vCPU TLBs").
/// A vCPU's TLB may hold any translation gfn -> (host frame, rights) the tables held since the last flush covering
/// that gfn was delivered to that vCPU (and links to tables, whose translations are ones the tables held: a link is
/// kept no longer than a translation through it, since a freed table owes a flush of everything it covered). What
/// each step owes stays <see cref="TdpTlb.MustFlush"/>'s VM-wide rule; this record adds when it arrives: at every
/// vCPU no later than the return of the operation that owes it.
/// <para>
/// So a translation still in the tables is always allowed (it is what a walk finds), and the record only keeps the
/// ones the tables lost, each with the flushes owed over its gfns since (an operation's flushes are stamped with the
/// moment it returned, or <see cref="Pending"/>). A vCPU's own moment is when its access began (entered the guest):
/// flushes delivered to it later cannot have taken the translation away yet, so two vCPUs may see different things
/// at once. <see cref="MayUse"/> is the one rule for what such an access may return.
/// </para>
/// </summary>
public sealed class VcpuTlbs : IEquatable<VcpuTlbs>
{
    /// <summary>The return moment of an operation that has not returned: its flushes may not have arrived anywhere.</summary>
    public const long Pending = long.MaxValue;

    VcpuTlbs(ImmutableList<StaleTranslation> stale) => Stale = stale;

    /// <summary>Nothing lost yet: every TLB holds at most what the tables hold.</summary>
    public static VcpuTlbs Empty { get; } = new(ImmutableList<StaleTranslation>.Empty);

    /// <summary>The translations the tables lost that some vCPU may still cache, oldest loss first.</summary>
    public ImmutableList<StaleTranslation> Stale { get; }

    /// <summary>
    /// After a step from <paramref name="before"/> to <paramref name="after"/> by an operation that returned at
    /// <paramref name="returnedAt"/> (or <see cref="Pending"/>): every leaf it took away joins the stale ones, and
    /// the flushes it owes (<see cref="TdpTlb.MustFlush"/>) are stamped on every stale translation they cover.
    /// A translation the tables hold again is no longer stale (a walk finds it).
    /// </summary>
    public VcpuTlbs Step(TdpState before, TdpState after, long returnedAt)
    {
        if (ReferenceEquals(before.Pages, after.Pages)) return this;   // no leaf lost, no flush owed (MustFlush)
        var owed = TdpTlb.MustFlush(before, after).Gfns;
        var held = Translations(after).ToHashSet();
        var lost = Translations(before).Where(t => !held.Contains(t)).ToList();
        var stale = ImmutableList.CreateBuilder<StaleTranslation>();
        foreach (var s in Stale)
        {
            // Held again: a walk finds it, and when it is lost again it starts afresh (it may be cached anew meanwhile).
            if (held.Contains((s.Mirror, s.Leaf))) continue;
            stale.Add(Flushed(s, owed, returnedAt));
        }
        foreach (var (mirror, leaf) in lost)
            stale.Add(Flushed(new StaleTranslation(mirror, leaf, ImmutableList<PendingFlush>.Empty), owed, returnedAt));
        return new VcpuTlbs(stale.ToImmutable());
    }

    /// <summary>
    /// After a host unmap of <paramref name="unmapped"/> (an MMU notifier's invalidate_range_start: zap_range, or
    /// host_invalidate_start) that returned at <paramref name="returnedAt"/>: from its return no vCPU may use a
    /// translation into those gfns, whoever owed the flush, since the host may free or reuse the pages then. KVM's
    /// notifier flushes only what it zapped itself (kvm_unmap_gfn_range's return value), so this holds only because
    /// every zap flushes what it unmapped before it drops mmu_lock (KVM a835429cda91, "Ensure TLBs are flushed when
    /// yielding during GFN range zap"): a notifier that runs while a zap yields finds the leaf gone and owes nothing.
    /// </summary>
    public VcpuTlbs Unmapped(GfnRanges unmapped, long returnedAt)
    {
        if (returnedAt == Pending || Stale.IsEmpty) return this;
        var stale = Stale.Select(s => Flushed(s, unmapped, returnedAt)).ToImmutableList();
        return stale.SequenceEqual(Stale) ? this : new VcpuTlbs(stale);
    }

    /// <summary>
    /// What an access to <paramref name="gpa"/> that entered the guest at <paramref name="enteredAt"/> may take from
    /// its vCPU's TLB besides what the tables say: a hit (nothing faulted, nothing changed) on every stale
    /// translation of that root covering the gfn with the rights the access needs, unless a flush over the gfn had
    /// surely reached the vCPU by then (its operation returned before the access began).
    /// </summary>
    public IEnumerable<TdpResult.Mapped> MayUse(VmConfig config, ulong gpa, AccessType type, long enteredAt)
    {
        if (gpa >> config.GpaBits != 0) yield break;                      // rejected before the guest runs
        ulong gfn = (gpa >> 12) & ~config.DirectBits;
        bool mirror = config.SharedBit is not null && ((gpa >> 12) & config.DirectBits) == 0;
        foreach (var s in Stale)
        {
            if (s.Mirror != mirror || !s.Leaf.Covers(gfn) || (type == AccessType.Write && !s.Leaf.Writable)) continue;
            if (s.FlushedBefore(gfn, enteredAt)) continue;
            yield return new TdpResult.Mapped(((s.Leaf.HostPfn + (gfn - s.Leaf.Gfn)) << 12) | (gpa & 0xFFF), s.Leaf.Size, Faulted: false);
        }
    }

    /// <summary>Every translation of <paramref name="state"/>: root and leaf, accessed/dirty cleared.</summary>
    static IEnumerable<(bool Mirror, Spte.Leaf Leaf)> Translations(TdpState state) =>
        state.Leaves().Select(l => (l.Page.Role.Mirror, l.Leaf with { Accessed = false, Dirty = false }));

    static StaleTranslation Flushed(StaleTranslation s, GfnRanges owed, long returnedAt)
    {
        var range = GfnRanges.Of(GfnRange.OfCount(s.Leaf.Gfn, s.Leaf.Frames));
        var covered = range.Except(range.Except(owed));
        return covered.IsEmpty ? s : s with { Flushes = s.Flushes.Add(new PendingFlush(covered, returnedAt)) };
    }

    public bool Equals(VcpuTlbs? other) => other is not null && Stale.SequenceEqual(other.Stale);

    public override bool Equals(object? obj) => Equals(obj as VcpuTlbs);

    public override int GetHashCode() => Stale.Count;

    public override string ToString() => Stale.IsEmpty ? "no stale translation" : string.Join("; ", Stale);
}
