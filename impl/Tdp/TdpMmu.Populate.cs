using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.PageTable;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// KVM_PRE_FAULT_MEMORY (docs/tdp-model.md, "Pre-faulting a range"): the same result as a read fault at
/// each leaf's start, but holes are filled a table at a time: one descent per leaf table, then a store
/// per leaf, instead of a walk from the root per page.
/// </summary>
public sealed partial class TdpMmu<TFormat>
{
    public TdpPreFaultOutcome PreFault(ulong gpa, ulong size)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        // KVM's kvm_vcpu_pre_fault_memory: EINVAL for an empty, unaligned or wrapping range.
        if (size == 0 || ((gpa | size) & PageOffsetMask) != 0 || gpa + size < gpa)
            return RejectPreFault(gpa, size);

        ulong end = gpa + size, at = gpa;
        bool retried = false;
        while (at < end && (at >> _gpaBits) == 0)
        {
            if (!_notifier.Quiet)
            {
                // Host pages under change or moved: read faults one leaf at a time, stopping at a Retry.
                TdpAccessOutcome read = Access(at, AccessType.Read);
                if (read.Status != TdpAccessStatus.Mapped)
                {
                    retried = read.Status == TdpAccessStatus.Retry;
                    break;
                }
                ulong bytes = 1UL << read.PageShift;
                at = (at & ~(bytes - 1)) + bytes;
                continue;
            }
            ulong frame = at >> PageShift;
            ulong gfn = frame & ~_sharedGfnMask;
            bool mirror = _sharedGfnMask != 0 && frame == gfn;
            if (_slots.Find(gfn) is not HostMemslot slot)
                break; // no memslot: KVM's fault emulates, the ioctl stops with -ENOENT
            ulong next = FillRun(slot, frame, gfn, mirror, end >> PageShift);
            if (next != 0)
            {
                at = next << PageShift;
                continue;
            }
            // Something other than a hole or a hit at the leaf's level (a huge leaf above it, a table where
            // it goes): the fault rule itself, which also issues the flushes a replacement owes.
            TdpAccessOutcome fault = PrefetchAccess(at);
            Debug.Assert(fault.Status == TdpAccessStatus.Mapped, "a read fault in a slot maps");
            ulong leafBytes = 1UL << fault.PageShift;
            at = (at & ~(leafBytes - 1)) + leafBytes;
        }
        return at == gpa
            ? new TdpPreFaultOutcome(retried ? TdpAccessStatus.Retry : TdpAccessStatus.MmioExit, 0)
            : new TdpPreFaultOutcome(TdpAccessStatus.Mapped, Math.Min(at, end) - gpa);
    }

    /// <summary>
    /// Maps, as read faults would, the run of leaves from <paramref name="frame"/> (a gfn of
    /// <paramref name="slot"/>) that share its leaf table: descends once, creating missing tables,
    /// then fills holes and steps over leaves already there (read hits) until the table ends, the range
    /// ends (<paramref name="endFrame"/>) or the next leaf would leave the slot. Returns the frame after
    /// the run, or 0 when the first entry is not for this path (a huge leaf on the way or a table where
    /// the leaf goes): then nothing has changed. Fills only holes, so it owes no TLB flush.
    /// Optimized at once (here and in the fills): a VMM pre-faults a few times, each call runs this once per
    /// leaf table, and tiered compilation left the first populates in unoptimized code (about 40 ns per
    /// mapping on the second populate of 1 GiB, 8 ns on the 40th, 0.6-0.9 ns once optimized).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private ulong FillRun(HostMemslot slot, ulong frame, ulong gfn, bool mirror, ulong endFrame)
    {
        int level = slot.TargetLevel(gfn, _policyLevel);
        ref TableRef root = ref mirror ? ref _mirrorRoot : ref _directRoot;
        if (root.IsNull)
            root = _pages.Allocate(0, _rootLevel, mirror); // as a miss creates it; a new root is all holes
        AssertTable(root, _rootLevel, mirror);

        var pages = new TdpTablePages(_pages, _sharedGfnMask, mirror);
        TableRef table = root;
        bool fresh = false; // the leaf table was allocated by this descent: every entry is a hole
        for (int l = _rootLevel; l > level; l--)
        {
            ref ulong entry = ref table[Index(frame, l)];
            ulong value = entry;
            if (!TFormat.IsPresent(value))
            {
                // Nothing is allocated before this point on a path that bails out: below a hole all is new.
                TableRef child = pages.Allocate(l - 1, AlignDown(frame, l));
                entry = TFormat.MakeTable(child.Address);
                table = child;
                fresh = true;
            }
            else if (TFormat.IsLeaf(value, l))
            {
                return 0;
            }
            else
            {
                table = TableRef.At(TFormat.TableAddress(value), l - 1);
                AssertTable(table, l - 1, mirror);
            }
        }

        // Every later leaf of this table that lies inside the slot gets the same level: a larger one
        // would cover this whole table, which did not fit for the first; the host alignment, the policy
        // and dirty logging are the slot's. So the run stops at the table's end or the slot's last
        // whole leaf, and at the range's end (the last leaf may reach past it, as KVM's would).
        ulong frames = FramesPerEntry(level);
        ulong first = AlignDown(frame, level);
        ulong shared = frame - gfn;
        ulong stop = Math.Min(endFrame, AlignDown(frame, level + 1) + FramesPerEntry(level + 1));
        stop = Math.Min(stop, slot.EndGfn + shared - frames + 1); // the first leaf fits, so no underflow
        int start = Index(frame, level);
        int last = start + (int)((stop - first + frames - 1) >> FrameShift(level));
        Debug.Assert(last > start && last <= EntriesPerTable, "a run of at least one leaf, inside the table");

        ulong hostPfn = slot.HostPfnBase + (first - shared - slot.BaseGfn);
        // A read fault's leaf: writable unless the slot is read-only or logs (docs/tdp-model.md, step 6).
        bool writable = !slot.ReadOnly && !slot.DirtyLogging;
        int i = fresh && level == 1 && writable
            ? FillFreshTable4K(table, start, last, hostPfn)
            : FillHoles(table, start, last, hostPfn, level, !slot.ReadOnly, writable);
        return i == start ? 0 : first + ((ulong)(i - start) << FrameShift(level));
    }

    /// <summary>
    /// The common populate: writable 4 KiB leaves into a leaf table this descent created, so every entry is
    /// a hole and the fill is a loop of stores with the level and flags constant (no read of the entry,
    /// no per-page decision); saves about two thirds of the per-mapping time of <see cref="FillHoles"/>
    /// (docs/performance.md). Returns <paramref name="last"/>, as FillHoles would over holes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int FillFreshTable4K(TableRef table, int start, int last, ulong hostPfn)
    {
        for (int i = start; i < last; i++, hostPfn++)
        {
            Debug.Assert(table[i] == 0, "a fresh table has only holes");
            table[i] = TdpLeaf<TFormat>.MakeWritable(hostPfn, 1);
        }
        return last;
    }

    /// <summary>
    /// Fills the holes of entries [<paramref name="start"/>, <paramref name="last"/>) with leaves of
    /// <paramref name="level"/>, stepping over leaves already there (read hits), and stops at a table
    /// where a leaf goes (the fault rule replaces it and flushes). Returns the index it stopped at.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int FillHoles(TableRef table, int start, int last, ulong hostPfn, int level, bool hostWritable, bool writable)
    {
        ulong frames = FramesPerEntry(level);
        int i = start;
        for (; i < last; i++, hostPfn += frames)
        {
            ref ulong entry = ref table[i];
            ulong value = entry;
            if (!TFormat.IsPresent(value))
                entry = TdpLeaf<TFormat>.Make(hostPfn, level, hostWritable, writeTracked: false, writable);
            else if (!TFormat.IsLeaf(value, level))
                break; // a table where the leaf goes: the fault rule replaces it (and flushes)
            // else a leaf of this level: a read hit, nothing changes
        }
        return i;
    }

    private TdpPreFaultOutcome RejectPreFault(ulong gpa, ulong size)
    {
        LastRejection = $"pre-fault range [0x{gpa:X}, +0x{size:X}) is empty, not page aligned or wraps";
        return new TdpPreFaultOutcome(TdpAccessStatus.Rejected, 0);
    }
}
