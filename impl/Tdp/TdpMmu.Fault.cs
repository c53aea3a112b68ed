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
    /// The fast path: an access in the cached small slot (<see cref="_smallSlotFrames"/>: a slot whose every
    /// gfn maps at 4 KiB, writable, without logging) and in a GiB whose level-2 table is cached
    /// (<see cref="_gigTables"/>) is one level-2 entry and one leaf: a hit, or a 4 KiB miss decided right there,
    /// without the slot lookup, the walk from the root or the miss path's arguments; saves most of the
    /// per-access cost, and being short lets the CPU overlap the cache misses of consecutive shuffled
    /// accesses (docs/performance.md). Anything else goes to <see cref="AccessInSmallSlot"/>, then
    /// <see cref="AccessSlow"/>, whose result both must equal: the cache is filled only where the slow path
    /// would do just this (<see cref="CacheSmallSlot"/>), and forgotten by anything that could change that
    /// (<see cref="ForgetCachedTables"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TdpAccessOutcome Access(ulong gpa, AccessType type)
    {
        ulong frame = gpa >> PageShift;
        ulong offset = frame - _smallSlotFirstFrame; // the cached root's index space
        // A disposed MMU has no small slot, and a frame inside one is below 2^_gpaBits: neither needs a check.
        ulong gig = (frame >> GigShift) - _smallSlotFirstGig;
        if (offset < _smallSlotFrames && gig < GigTableCount && (uint)type <= (uint)AccessType.Fetch
            && _gigTables[(int)(gig & (GigTableCount - 1))] is { IsNull: false } level2) // the mask (a no-op here) drops the bounds check
        {
            AssertTable(level2, 2, _smallSlotMirror);
            ulong entry = level2[Index(frame, 2)];
            if (TFormat.IsPresent(entry) && !TFormat.IsLeaf(entry, 2))
            {
                TableRef table = TableRef.At(TFormat.TableAddress(entry), 1);
                AssertTable(table, 1, _smallSlotMirror);
                int index = (int)(frame & (EntriesPerTable - 1));
                ulong leaf = table[index];
                ulong hostPfn = _smallSlotHostPfn + offset;
                if (!TFormat.IsPresent(leaf))
                {
                    // Step 6 as the slow path takes it in this slot: a writable 4 KiB leaf, no table to
                    // allocate, nothing to flush or mark dirty.
                    table[index] = TdpLeaf<TFormat>.MakeWritable(hostPfn, 1);
                    return TdpAccessOutcome.Mapped((hostPfn << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: true);
                }
                if (type != AccessType.Write || TFormat.IsWritable(leaf))
                    return TdpAccessOutcome.Mapped((TFormat.LeafPfn(leaf) << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: false);
            }
        }
        return AccessInSmallSlot(gpa, type);
    }

    /// <summary>
    /// The second fast path: an access in the small slot outside the cached GiB walks from the root with
    /// plain loads, caches the level-2 table it passes, and fills a hole right where the walk stopped, as
    /// <see cref="Miss"/> would there (target level 1). A huge leaf on the way, or a write to a
    /// write-protected leaf, takes <see cref="AccessSlow"/>, which decides everything else.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private TdpAccessOutcome AccessInSmallSlot(ulong gpa, AccessType type)
    {
        ulong frame = gpa >> PageShift;
        ulong offset = frame - _smallSlotFirstFrame;
        if (offset < _smallSlotFrames && (uint)type <= (uint)AccessType.Fetch)
        {
            TableRef table = _smallSlotRoot;
            AssertTable(table, _rootLevel, _smallSlotMirror);
            for (int level = _rootLevel; level > 1; level--)
            {
                if (level == 2)
                {
                    ulong gig = (frame >> GigShift) - _smallSlotFirstGig;
                    if (gig < GigTableCount)
                        _gigTables[(int)(gig & (GigTableCount - 1))] = table; // the mask drops the bounds check
                }
                ulong entry = table[Index(frame, level)];
                if (!TFormat.IsPresent(entry))
                    return FillSmallSlotHole(table, level, frame, gpa, offset);
                if (TFormat.IsLeaf(entry, level))
                    return AccessSlow(gpa, type); // a huge leaf from an earlier policy
                table = TableRef.At(TFormat.TableAddress(entry), level - 1);
            }
            AssertTable(table, 1, _smallSlotMirror);
            int index = (int)(frame & (EntriesPerTable - 1));
            ulong leaf = table[index];
            ulong hostPfn = _smallSlotHostPfn + offset;
            if (!TFormat.IsPresent(leaf))
            {
                table[index] = TdpLeaf<TFormat>.MakeWritable(hostPfn, 1);
                return TdpAccessOutcome.Mapped((hostPfn << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: true);
            }
            if (type != AccessType.Write || TFormat.IsWritable(leaf))
                return TdpAccessOutcome.Mapped((TFormat.LeafPfn(leaf) << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: false);
        }
        return AccessSlow(gpa, type);
    }

    /// <summary>
    /// The small slot's miss: the walk stopped at a hole at <paramref name="level"/> of <paramref name="table"/>.
    /// Creates the tables below it and the 4 KiB leaf, as <see cref="Miss"/> does with target level 1 (new
    /// tables only, so no flush; the slot does not log, so nothing is marked dirty).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private TdpAccessOutcome FillSmallSlotHole(TableRef table, int level, ulong frame, ulong gpa, ulong offset)
    {
        ulong hostPfn = _smallSlotHostPfn + offset;
        var pages = new TdpTablePages(_pages, _sharedGfnMask, _smallSlotMirror);
        var hole = new PteRef(table, Index(frame, level), level, AlignDown(frame, level), 0);
        RadixTable<TFormat>.MapFrom(ref pages, hole, frame, 1, TdpLeaf<TFormat>.MakeWritable(hostPfn, 1));
        return TdpAccessOutcome.Mapped((hostPfn << PageShift) | (gpa & PageOffsetMask), PageShift, faulted: true);
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
                CacheSmallSlot(slot, frame, mirror);
            return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: _accessedMask != 0 && Touch(pte, write));
        }
        // A fault while the host changes the page behind the gfn (mmu_invalidate_retry_gfn): fault again later.
        if (_notifier.MustRetry(gfn))
            return TdpAccessOutcome.Retry;

        // Step 5: a write-protection fault. A 4 KiB leaf, or any leaf of a slot that does not log,
        // becomes writable (KVM's fast page fault); a logged write is marked dirty.
        if (level == 1 || !slot.DirtyLogging)
        {
            pte.Write(TdpLeaf<TFormat>.MadeWritable(leaf));
            if (_accessedMask != 0)
                Touch(pte, write);
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
        if (_notifier.MustRetry(gfn))
            return TdpAccessOutcome.Retry; // as before step 5: nothing is mapped while the host changes the page
        int level = slot.TargetLevel(gfn, _policyLevel);
        ulong hostPfn = _notifier.Quiet
            ? slot.HostPfnBase + (AlignDown(gfn, level) - slot.BaseGfn)
            : SettledLeaf(slot, gfn, ref level); // host pages under change or moved (TdpMmu.Notifier.cs)
        ulong leafGfn = AlignDown(gfn, level);
        bool logging = slot.DirtyLogging;
        ulong leaf = TdpLeaf<TFormat>.Make(hostPfn, level, hostWritable: !slot.ReadOnly, writeTracked: false,
            writable: !slot.ReadOnly && (!logging || write)) | InstallBits(write);

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
                CacheSmallSlot(slot, frame, mirror);
        }
        else
        {
            ForgetCachedTables(); // the tables under the new leaf are freed, a cached level-2 table among them when the leaf is 1 GiB
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
    /// Remembers <paramref name="slot"/>, where the slow path just mapped or hit a 4 KiB leaf for
    /// <paramref name="frame"/>, for the fast paths when every gfn in it maps as a 4 KiB writable leaf with
    /// nothing to log: neither read-only nor logging, and min(policy, its level cap) is 1, so
    /// <see cref="HostMemslot.TargetLevel"/> is 1 for each of its gfns. The range is in the index space of the root
    /// the slow path used (<paramref name="mirror"/>), so a shared and a private gpa never share it. That
    /// root exists (it was just used) and lives until ZapAll, which forgets the cache.
    /// </summary>
    private void CacheSmallSlot(HostMemslot slot, ulong frame, bool mirror)
    {
        if (slot.ReadOnly || slot.DirtyLogging || Math.Min(_policyLevel, slot.LevelCap) != 1 || _accessedMask != 0)
            return; // with accessed state kept, every access sets it: the slow path does (TdpMmu.Aging.cs)
        // Its frame arithmetic assumes home frames, and its faults skip the retry check.
        if (!_notifier.Quiet && (_notifier.InProgress != 0 || _notifier.Migrated.CountIn(slot.HostPfnBase, slot.HostPfnBase + slot.Pages) != 0))
            return;
        ulong shared = frame - (frame & ~_sharedGfnMask);
        _smallSlotRoot = mirror ? _mirrorRoot : _directRoot;
        AssertTable(_smallSlotRoot, _rootLevel, mirror);
        _smallSlotMirror = mirror;
        _smallSlotFirstFrame = slot.BaseGfn + shared;
        _smallSlotFrames = slot.Pages;
        _smallSlotHostPfn = slot.HostPfnBase;
        _smallSlotFirstGig = _smallSlotFirstFrame >> GigShift;
        _gigTables = default; // the next walks in the slot cache their level-2 tables
    }

    /// <summary>
    /// Drops the small slot and the cached level-2 tables. Called by everything that frees or unlinks a
    /// table, changes a slot or the mapping policy (what <see cref="CacheSmallSlot"/> checked), and by
    /// Dispose; the fast paths would otherwise walk a freed table or act on a stale decision
    /// (TdpLeafTableCacheTests).
    /// </summary>
    private void ForgetCachedTables()
    {
        _smallSlotFrames = 0; // no frame is inside: neither fast path runs
        _smallSlotRoot = default;
        _gigTables = default;
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
