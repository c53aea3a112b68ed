using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// Write tracking (KVM's kvm_write_track_add_gfn / remove_gfn, page_track.c): a tracked gfn is never
/// writable. Tracking one write-protects every leaf mapping it, W and MMU-writable both
/// (kvm_tdp_mmu_write_protect_gfn), so the fast fault cannot make it writable again; a write to it exits for
/// emulation; a new leaf for it is read-only and not MMU-writable; no huge leaf covers it (KVM's
/// disallow_lpage). Tracking is by gfn and outlives slot changes. Dirty logging's write-protection, which
/// keeps MMU-writable, is <see cref="TdpLeaf{TFormat}.ProtectedForLog"/>.
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    // Tracked gfns (shared bit stripped); changed under the write side, read by faults under the read side.
    private readonly HashSet<ulong> _tracked = new();

    /// <summary>Starts tracking writes to <paramref name="gfn"/>, which must lie in a slot; write-protects it at once.</summary>
    public TdpStatus TrackWrites(ulong gfn)
    {
        EnterWrite();
        try
        {
            if (!InSlot(gfn))
                return Reject($"gfn 0x{gfn:X} is in no slot");
            if (_tracked.Add(gfn))
            {
                _fastFaultsUseful = true; // a read-only leaf may appear: writes try the fast path (which must refuse it)
                WriteProtectGfn(gfn);
            }
            return TdpStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>Stops tracking <paramref name="gfn"/>. Its leaves stay read-only until a write fault under mmu_lock.</summary>
    public TdpStatus UntrackWrites(ulong gfn)
    {
        EnterWrite();
        try
        {
            if (!_tracked.Remove(gfn))
                return Reject($"gfn 0x{gfn:X} is not tracked");
            return TdpStatus.Ok;
        }
        finally
        {
            ExitWrite();
        }
    }

    /// <summary>The tracked gfns (for a quiescent MMU).</summary>
    public IReadOnlyCollection<ulong> TrackedGfns => _tracked;

    private bool InSlot(ulong gfn)
    {
        foreach (HostMemslot slot in _slots.All)
            if (slot.Contains(gfn))
                return true;
        return false;
    }

    private bool IsWriteTracked(ulong gfn) => _tracked.Count != 0 && _tracked.Contains(gfn);

    /// <summary>Whether a tracked gfn lies in the range a leaf at <paramref name="level"/> from <paramref name="gfn"/> maps (4 KiB: never, the fault checked its own gfn).</summary>
    private bool TracksWithin(ulong gfn, int level)
    {
        if (level == 1 || _tracked.Count == 0)
            return false;
        ulong first = AlignDown(gfn, level), frames = FramesPerEntry(level);
        foreach (ulong t in _tracked)
            if (t - first < frames)
                return true;
        return false;
    }

    /// <summary>The largest level at most <paramref name="target"/> whose leaf for <paramref name="gfn"/> covers no tracked gfn.</summary>
    private int LowerForTracking(ulong gfn, int target)
    {
        while (target > 1 && TracksWithin(gfn, target))
            target--;
        return target;
    }

    /// <summary>
    /// kvm_tdp_mmu_write_protect_gfn under the write side: W and MMU-writable go from every leaf mapping
    /// <paramref name="gfn"/> in both roots, each changed leaf flushed over its range. A leaf is skipped only
    /// when clearing both changes nothing: one dirty logging left read-only is still MMU-writable, and the
    /// fast fault would make it writable again (upstream 7c8a4742c4ab, "KVM: x86/mmu: Fix write-protection of
    /// PTs mapped by the TDP MMU").
    /// </summary>
    private void WriteProtectGfn(ulong gfn)
    {
        if (gfn >= _slotGfnLimit)
            return;
        WriteProtectGfn(_directRoot, gfn + _sharedGfnMask);
        WriteProtectGfn(_mirrorRoot, gfn);
    }

    // One host walk under the read side at a time: it has one epoch slot (KVM serializes memslot updates with slots_lock).
    private SideLock<TSched> _hostWalk;

    /// <summary>
    /// Dirty logging's write-protection of gfns [start, end) under the read side (kvm_tdp_mmu_wrprot_slot with
    /// mmu_lock held for read): each writable leaf loses W by its own compare-and-exchange (a lost one re-reads
    /// the entry and decides again), faults and fast faults run between two leaves, and a frozen entry is waited
    /// out. Then the range is flushed (kvm_mmu_slot_apply_flags). A fault that fixes a leaf after the slot began
    /// to log but before the walk reaches it ends read-only and dirty: the spec's walk explains it.
    /// </summary>
    private void WriteProtectForLog(ulong start, ulong end)
    {
        ThrowIfDisposed();
        _hostWalk.Enter();
        _epochs.Enter(Epochs<TSched>.HostSlot);
        _lock.EnterRead();
        bool held = true;
        try
        {
            var rule = new WriteProtectForLogRule();
            WalkBothRoots(ref rule, start, end, WalkSide.ReadLocked(Epochs<TSched>.HostSlot), ref held);
        }
        finally
        {
            if (held)
            {
                _lock.ExitRead();
                _epochs.Exit(Epochs<TSched>.HostSlot);
            }
            _hostWalk.Exit();
        }
        ReclaimDeferred();
        AddFlush(start, end - start); // the memslot, unconditionally
    }

    private void WriteProtectGfn(ulong root, ulong frame)
    {
        foreach (PteRef pte in new PteIterator<TFormat>(RootRef(root), _rootLevel, frame, frame + 1))
        {
            ulong value = pte.Value;
            if (!RadixTable<TFormat>.IsLeafEntry(value, pte.Level))
                continue;
            ulong protectedLeaf = TdpLeaf<TFormat>.ProtectedForTracking(value);
            if (protectedLeaf == value)
                continue;
            pte.Write(protectedLeaf);
            AddFlush(pte.Frame & ~_sharedGfnMask, FramesPerEntry(pte.Level));
        }
    }
}
