using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// Aging with many vCPUs (docs/tdp-model.md, "Aging"): faults set the accessed/dirty bits by
/// compare-and-exchange, as the rest of a fault changes entries, and kvm_age_gfn / kvm_test_age_gfn run
/// under mmu_lock held for read, as KVM's TDP MMU runs them (kvm_tdp_mmu_age_gfn_range; since 2025 under RCU
/// alone): each young leaf is made old by a compare-and-exchange against the value read, and a lost
/// exchange re-reads that entry and decides again, so aging races faults, write-protection faults and
/// zaps of huge leaves without losing an update. A frozen entry is never present, so aging never changes
/// it (EPT's frozen value holds bit 8, stage-2's bit 10: the accessed bits); the walk waits it out.
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    private TdpAccessedDirty _accessedDirty;

    // As in TdpMmu.Aging.cs: the accessed bit kept (0 when none is: untracked, or EPT without A/D, where
    // aging zaps), the dirty bit (EPT with A/D), and whether an old leaf's access is a fault (stage-2 without HA).
    private ulong _accessedMask;
    private ulong _dirtyMask;
    private bool _softwareAccessed;

    private void SetAccessedDirty(TdpAccessedDirty mode)
    {
        var bits = TdpAccessedDirtyBits.Of<TFormat>(mode);
        _accessedDirty = mode;
        (_accessedMask, _dirtyMask, _softwareAccessed) = (bits.Accessed, bits.Dirty, bits.SoftwareAccessed);
    }

    public TdpAccessedDirty AccessedDirty => _accessedDirty;

    /// <summary>What an access through a leaf sets in it: A, and D for a write.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong TouchBits(bool write) => _accessedMask | (write ? _dirtyMask : 0);

    /// <summary>
    /// A hit while accessed state is kept: the CPU's update of A (and D), by compare-and-exchange against the
    /// value the walk read; a lost exchange is a Retry, as a lost fault is. Faulted when the leaf was old and
    /// the hardware does not set AF (arm64's access-flag fault).
    /// </summary>
    private TdpVcpuOutcome TouchHit(PteRef pte, ulong hpa, int level, bool write)
    {
        ulong young = pte.Value | TouchBits(write);
        if (young != pte.Value && !TryExchange(pte, young))
            return TdpVcpuOutcome.Retry;
        return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: _softwareAccessed && (pte.Value & _accessedMask) == 0);
    }

    private bool LeafAccessed(ulong leaf) =>
        _accessedDirty != TdpAccessedDirty.Untracked && (_accessedMask == 0 || (leaf & _accessedMask) != 0);

    private bool LeafDirty(ulong leaf) => (leaf & _dirtyMask) != 0;

    /// <summary>
    /// kvm_age_gfn over gfns [startGfn, endGfn), both roots, under the read side, entry by entry (KVM's
    /// kvm_tdp_mmu_age_gfn_range; since 2025 under RCU alone): faults run between two leaves of one age, which
    /// the spec's walk of per-entry steps explains (TdpState.RangeSteps.cs). <paramref name="reader"/>'s epoch keeps
    /// the tables it walks from being freed (KVM: rcu_read_lock), so a host thread that ages uses a vCPU of its own.
    /// </summary>
    public TdpStatus Age(ConcurrentTdpVcpu<TFormat, TSched> reader, ulong startGfn, ulong endGfn, out bool young) =>
        Aging(reader, startGfn, endGfn, clear: true, out young);

    /// <summary>kvm_test_age_gfn: as <see cref="Age"/>, changing nothing; the first young leaf answers.</summary>
    public TdpStatus TestAge(ConcurrentTdpVcpu<TFormat, TSched> reader, ulong startGfn, ulong endGfn, out bool young) =>
        Aging(reader, startGfn, endGfn, clear: false, out young);

    private TdpStatus Aging(ConcurrentTdpVcpu<TFormat, TSched> reader, ulong start, ulong end, bool clear, out bool young)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ThrowIfDisposed();
        young = false;
        if (_accessedDirty == TdpAccessedDirty.Untracked)
            return Reject("this MMU does not track accessed state");
        if (start >= end || end > _gfnLimit)
            return Reject($"age range [0x{start:X}, 0x{end:X}) is empty or beyond 2^{_gpaBits - PageShift} frames");
        var rule = new AgeRule(clear);
        _epochs.Enter(reader.Id);
        _lock.EnterRead();
        bool held = true;
        try
        {
            WalkBothRoots(ref rule, start, end, WalkSide.ReadLocked(reader.Id), ref held);
        }
        finally
        {
            if (held)
            {
                _lock.ExitRead();
                _epochs.Exit(reader.Id);
            }
        }
        ReclaimDeferred();
        young = rule.Young;
        return TdpStatus.Ok;
    }

    /// <summary>
    /// One leaf of an age: a young one is made old by a compare-and-exchange against the value read (KVM clears
    /// only A, tdp_mmu_clear_spte_bits_atomic, and owes no flush), or without EPT A/D zapped as
    /// tdp_mmu_zap_spte_atomic does it: frozen until its flush is issued. A lost exchange reads the entry again;
    /// the leaf counts as young only once its exchange won. For test_age the first young leaf ends the walk.
    /// </summary>
    private struct AgeRule(bool clear) : ILeafRule
    {
        public bool Young;

        public LeafStep Visit(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef leaf)
        {
            ulong value = leaf.Value;
            if (!mmu.LeafAccessed(value))
                return LeafStep.Next;
            if (!clear)
            {
                Young = true;
                return LeafStep.Stop;
            }
            if (mmu._accessedMask != 0)
            {
                if (!TryExchange(leaf, value & ~mmu._accessedMask))
                    return LeafStep.Again;
                Young = true;
                return LeafStep.Next;
            }
            if (!TryExchange(leaf, TFormat.FrozenEntry))
                return LeafStep.Again;
            Young = true;
            mmu.AddFlush(leaf.Frame & ~mmu._sharedGfnMask, FramesPerEntry(leaf.Level));
            TSched.Yield(SchedulePointKind.SpteExchange);
            leaf.WriteRelease(0);
            return LeafStep.Next;
        }
    }
}
