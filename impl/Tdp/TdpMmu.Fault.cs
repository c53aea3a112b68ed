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

    /// <summary>
    /// The fast path: an access inside the cached leaf table's 2 MiB (<see cref="_leafGranule"/>) is a hit
    /// or a 4 KiB miss decided right there, without the slot lookup, the walk from the root or the miss
    /// path's arguments; saves most of the per-access cost (docs/performance.md). Everything else, and a
    /// write to a write-protected leaf, takes <see cref="AccessSlow"/>, whose result it must equal: the
    /// cache is filled only where the slow path would do just this (<see cref="CacheLeafTable"/>), and
    /// forgotten by anything that could change that (<see cref="ForgetLeafTable"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TdpAccessOutcome Access(ulong gpa, AccessType type)
    {
        ulong frame = gpa >> PageShift;
        // A disposed MMU has no cache, and a gpa in a cached granule is below 2^_gpaBits: neither needs a check.
        if ((frame >> IndexBits) == _leafGranule && (uint)type <= (uint)AccessType.Fetch)
        {
            int index = (int)(frame & (EntriesPerTable - 1));
            ulong leaf = _leafTable[index];
            if (!TFormat.IsPresent(leaf))
            {
                // Step 6 as the slow path would take it here: a writable 4 KiB leaf (the slot neither is
                // read-only nor logs), no table to allocate, nothing to flush or mark dirty.
                ulong hostPfn = _leafHostPfn + (ulong)index;
                _leafTable[index] = TFormat.MakeLeaf(hostPfn, 1, writable: true);
                return TdpAccessOutcome.Mapped((hostPfn << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: true);
            }
            if (type != AccessType.Write || TFormat.IsWritable(leaf))
                return TdpAccessOutcome.Mapped((TFormat.LeafPfn(leaf) << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: false);
        }
        return AccessSlow(gpa, type);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private TdpAccessOutcome AccessSlow(ulong gpa, AccessType type)
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
        {
            if (level == 1)
                CacheLeafTable(slot, pte.Table, frame);
            return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: false);
        }

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
            PteRef mapped = RadixTable<TFormat>.MapFrom(ref pages, stop, frame, level, leaf); // the walk stopped at or above the leaf's level: only new tables below
            if (level == 1)
                CacheLeafTable(slot, mapped.Table, frame);
        }
        else
        {
            ForgetLeafTable(); // the tables under the new leaf are freed (the cached one cannot be among them, but be safe)
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

    /// <summary>
    /// Remembers <paramref name="table"/>, the level-1 table the slow path just used for
    /// <paramref name="frame"/>, when every access to its 2 MiB would go as the fast path takes it: one
    /// slot covers all 512 gfns, is writable and does not log, and maps them at 4 KiB (the target level
    /// is the same for all of them: its larger ranges are the same).
    /// </summary>
    private void CacheLeafTable(HostMemslot slot, TableRef table, ulong frame)
    {
        AssertTable(table, 1, mirror: _sharedGfnMask != 0 && (frame & _sharedGfnMask) == 0);
        ulong firstGfn = AlignDown(frame & ~_sharedGfnMask, 2);
        if (slot.ReadOnly || slot.DirtyLogging || !slot.Contains(firstGfn) || !slot.Contains(firstGfn + EntriesPerTable - 1)
            || TargetLevel(slot, firstGfn) != 1)
            return;
        _leafGranule = frame >> IndexBits;
        _leafTable = table;
        _leafHostPfn = slot.HostPfnBase + (firstGfn - slot.BaseGfn);
    }

    /// <summary>
    /// Drops the cached leaf table. Called by everything that frees or unlinks a table, changes a slot
    /// or the mapping policy (what <see cref="CacheLeafTable"/> checked), and by Dispose; the fast path
    /// would otherwise serve a freed table or a stale decision (TdpLeafTableCacheTests).
    /// </summary>
    private void ForgetLeafTable()
    {
        _leafGranule = NoGranule;
        _leafTable = default;
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
