using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.PageTable;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>The fault handler: docs/tdp-model.md, "The fault handler", steps 1 to 6.</summary>
public sealed partial class TdpMmu<TFormat>
{
    private const ulong PageOffsetMask = (1UL << PageShift) - 1;

    public TdpAccessOutcome Access(ulong gpa, AccessType type)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if ((gpa >> _gpaBits) != 0 || (uint)type > (uint)AccessType.Fetch)
            return RejectAccess(gpa, type);

        // Step 1. The frame indexes the root as it is (gfn | shared bit for the direct root, gfn for
        // the mirror root); the gfn, for slots and bitmaps, has the shared bit stripped.
        ulong frame = gpa >> PageShift;
        ulong gfn = frame & ~_sharedGfnMask;
        bool mirror = _sharedGfnMask != 0 && frame == gfn; // a private gpa, in a VM with a shared bit

        // Steps 2 and 3: no slot, or a write to a read-only slot, exit to userspace; nothing changes.
        HostMemslot slot = _slots.Last; // never null: a hit needs no null check
        if (!slot.Contains(gfn))
        {
            if (_slots.Find(gfn) is not HostMemslot found)
                return TdpAccessOutcome.MmioExit;
            slot = found;
        }
        bool write = type == AccessType.Write;
        if (write && slot.ReadOnly)
            return TdpAccessOutcome.MmioExit;

        TableRef root = mirror ? _mirrorRoot : _directRoot;
        if (root.IsNull)
            return Miss(slot, gpa, gfn, write, mirror, default);
        AssertTable(root, _rootLevel, mirror);

        PteRef pte = RadixTable<TFormat>.Walk(root, _rootLevel, frame);
        AssertTable(pte.Table, pte.Level, mirror); // the walk followed entries' table addresses down to here
        ulong leaf = pte.Value;
        if (!TFormat.IsPresent(leaf))
            return Miss(slot, gpa, gfn, write, mirror, pte);

        // Step 4: a hit.
        int level = pte.Level;
        ulong hpa = ((TFormat.LeafPfn(leaf) + (frame & (FramesPerEntry(level) - 1))) << PageShift) | (gpa & PageOffsetMask);
        if (!write || TFormat.IsWritable(leaf))
            return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: false);

        // Step 5: a write-protection fault. A 4 KiB leaf, or any leaf of a slot that does not log,
        // becomes writable (KVM's fast page fault); a logged write is marked dirty.
        if (level == 1 || !slot.DirtyLogging)
        {
            pte.Write(TFormat.WithWritable(leaf, true));
            slot.MarkDirty(gfn);
            return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: true);
        }

        // A huge leaf of a logging slot goes, flushed over all it mapped (KVM's tdp_mmu_zap_spte_atomic:
        // kvm_flush_remote_tlbs_gfn(gfn, level)), and the access continues as a miss (which maps 4 KiB).
        pte.Clear();
        _flushes.Add(pte.Frame & ~_sharedGfnMask, FramesPerEntry(level));
        return Miss(slot, gpa, gfn, write, mirror, pte);
    }

    /// <summary>
    /// Step 6: no leaf covers the gfn. <paramref name="stop"/> is where the walk stopped (an entry that
    /// is not present), or default when the root does not exist yet.
    /// </summary>
    private TdpAccessOutcome Miss(HostMemslot slot, ulong gpa, ulong gfn, bool write, bool mirror, PteRef stop)
    {
        int level = TargetLevel(slot, gfn);
        ulong leafGfn = AlignDown(gfn, level);
        ulong hostPfn = slot.HostPfnBase + (leafGfn - slot.BaseGfn);
        bool logging = slot.DirtyLogging;
        ulong leaf = TFormat.MakeLeaf(hostPfn, level, writable: !slot.ReadOnly && (!logging || write));

        ulong frame = gpa >> PageShift;
        var pages = new TdpTablePages(_pages, _sharedGfnMask, mirror);
        ref TableRef root = ref mirror ? ref _mirrorRoot : ref _directRoot;
        if (root.IsNull)
        {
            // The root exists from the first fault that needs it until ZapAll (gfn 0, the root level).
            root = _pages.Allocate(0, _rootLevel, mirror);
            stop = new PteRef(root, Index(frame, _rootLevel), _rootLevel, AlignDown(frame, _rootLevel), 0);
        }
        AssertTable(stop.Table, stop.Level, mirror);
        Debug.Assert(stop.Current == 0 || RadixTable<TFormat>.IsLeafEntry(stop.Current, stop.Level), "a miss stops at a hole or a leaf to replace");

        if (stop.Level >= level)
        {
            RadixTable<TFormat>.MapFrom(ref pages, stop, frame, level, leaf); // the walk stopped at or above the leaf's level: only new tables below
        }
        else
        {
            // A table sits where the leaf goes: replace it and free its subtree. The hardware may hold the
            // link to that table for any gfn it covered, i.e. the new leaf's whole range: flush it all
            // (KVM's tdp_mmu_map_handle_target_level, kvm_flush_remote_tlbs_gfn(gfn, level)).
            RadixTable<TFormat>.Map(ref pages, root, _rootLevel, frame, level, leaf);
            _flushes.Add(leafGfn, FramesPerEntry(level));
        }

        if (write && logging)
            slot.Dirty!.Mark(gfn - slot.BaseGfn);
        ulong hpa = ((hostPfn + (gfn - leafGfn)) << PageShift) | (gpa & PageOffsetMask);
        return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: true);
    }

    /// <summary>
    /// The largest level L &lt;= min(policy, host page level, 3) (1 when the slot logs) such that the
    /// L-sized range around the gfn lies inside the slot and gfn and host frame are equally aligned
    /// (the alignment and host level are folded into <see cref="HostMemslot.LevelCap"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int TargetLevel(HostMemslot slot, ulong gfn)
    {
        if (slot.DirtyLogging)
            return 1;
        int level = Math.Min(_policyLevel, slot.LevelCap);
        for (; level > 1; level--)
        {
            ulong first = AlignDown(gfn, level);
            if (first >= slot.BaseGfn && first + FramesPerEntry(level) <= slot.EndGfn)
                break;
        }
        return level;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private TdpAccessOutcome RejectAccess(ulong gpa, AccessType type)
    {
        LastRejection = (uint)type > (uint)AccessType.Fetch
            ? $"unknown access type {type}"
            : $"gpa 0x{gpa:X} is not below 2^{_gpaBits}";
        return TdpAccessOutcome.Rejected;
    }
}
