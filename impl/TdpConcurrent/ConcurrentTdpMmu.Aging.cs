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
/// zaps of huge leaves without losing an update. A frozen entry is never present, so aging leaves it to
/// its owner (EPT's frozen value holds bit 8, stage-2's bit 10: the accessed bits).
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
    /// kvm_age_gfn over gfns [startGfn, endGfn), both roots, under the write side. KVM ages under mmu_lock
    /// held for read (or only RCU), entry by entry, so a fault can run between two entries of one age; the
    /// spec's Age is one atomic step, which cannot explain that (a vCPU sees an early leaf aged and a later one
    /// not yet: ConcurrentTdpAgingTests found it). Until the spec states range operations as runs of per-entry
    /// steps (docs/tdp-concurrency.md, "Not built yet"), aging excludes faults. <paramref name="reader"/> is the
    /// vCPU on whose behalf the host ages (kept for that read-side version).
    /// </summary>
    public TdpStatus Age(ConcurrentTdpVcpu<TFormat, TSched> reader, ulong startGfn, ulong endGfn, out bool young) =>
        Aging(reader, startGfn, endGfn, clear: true, out young);

    /// <summary>kvm_test_age_gfn: as <see cref="Age"/>, changing nothing.</summary>
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
        end = Math.Min(end, _slotGfnLimit); // leaves only map gfns inside slots
        if (start >= end)
            return TdpStatus.Ok;
        EnterWrite();
        try
        {
            TSched.Yield(SchedulePointKind.SpteRead);
            ulong direct = Volatile.Read(ref _directRoot);
            young = AgeTable(direct, _rootLevel, 0, start + _sharedGfnMask, end + _sharedGfnMask, clear);
            if (!young || clear)
            {
                TSched.Yield(SchedulePointKind.SpteRead);
                young |= AgeTable(Volatile.Read(ref _mirrorRoot), _rootLevel, 0, start, end, clear);
            }
        }
        finally
        {
            ExitWrite();
        }
        return TdpStatus.Ok;
    }

    /// <summary>
    /// The entries of the table at <paramref name="address"/> (level <paramref name="level"/>, first frame
    /// <paramref name="tableFrame"/>) that overlap [start, end): whether a leaf there was young, and with
    /// <paramref name="clear"/> each made old. Every entry is read once with acquire (a table another vCPU
    /// just linked is seen initialised) and changed only by compare-and-exchange.
    /// </summary>
    private bool AgeTable(ulong address, int level, ulong tableFrame, ulong start, ulong end, bool clear)
    {
        if (address == 0)
            return false;
        TableRef table = TableRef.At(address, level);
        ulong frames = FramesPerEntry(level);
        int first = start <= tableFrame ? 0 : (int)Math.Min(EntriesPerTable, (start - tableFrame) / frames);
        int last = (int)Math.Min(EntriesPerTable - 1, (end - 1 - tableFrame) / frames);
        bool young = false;
        for (int i = first; i <= last; i++)
        {
            ulong frame = tableFrame + (ulong)i * frames;
            var pte = new PteRef(table, i, level, frame, 0);
            while (true)
            {
                TSched.Yield(SchedulePointKind.SpteRead);
                ulong value = pte.CurrentAcquire;
                if (!TFormat.IsPresent(value))
                    break; // a hole, or frozen by a fault or zap that owns it now
                if (!TFormat.IsLeaf(value, level))
                {
                    young |= AgeTable(TFormat.TableAddress(value), level - 1, frame, start, end, clear);
                    break;
                }
                if (!LeafAccessed(value))
                    break;
                young = true;
                if (!clear)
                    return true;
                pte = pte.WithValue(value);
                if (_accessedMask != 0)
                {
                    // KVM clears only A (tdp_mmu_clear_spte_bits_atomic); no flush is owed.
                    if (TryExchange(pte, value & ~_accessedMask))
                        break;
                    continue; // lost to a fault or zap: read again and decide again
                }
                // No EPT A/D: zapped as tdp_mmu_zap_spte_atomic does it, frozen until its flush is issued.
                if (!TryExchange(pte, TFormat.FrozenEntry))
                    continue;
                AddFlush(frame & ~_sharedGfnMask, frames);
                TSched.Yield(SchedulePointKind.SpteExchange);
                pte.WriteRelease(0);
                break;
            }
        }
        return young;
    }
}
