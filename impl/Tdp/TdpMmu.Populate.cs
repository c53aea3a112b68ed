using System.Diagnostics;
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
        while (at < end && (at >> _gpaBits) == 0)
        {
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
            TdpAccessOutcome fault = Access(at, AccessType.Read);
            Debug.Assert(fault.Status == TdpAccessStatus.Mapped, "a read fault in a slot maps");
            ulong leafBytes = 1UL << fault.PageShift;
            at = (at & ~(leafBytes - 1)) + leafBytes;
        }
        return at == gpa
            ? new TdpPreFaultOutcome(TdpAccessStatus.MmioExit, 0)
            : new TdpPreFaultOutcome(TdpAccessStatus.Mapped, Math.Min(at, end) - gpa);
    }

    /// <summary>
    /// Maps, as read faults would, the run of leaves from <paramref name="frame"/> (a gfn of
    /// <paramref name="slot"/>) that share its leaf table: descends once, creating missing tables,
    /// then fills holes and steps over leaves already there (read hits) until the table ends, the range
    /// ends (<paramref name="endFrame"/>) or the next leaf would leave the slot. Returns the frame after
    /// the run, or 0 when the first entry is not for this path (a huge leaf on the way or a table where
    /// the leaf goes): then nothing has changed. Fills only holes, so it owes no TLB flush.
    /// </summary>
    private ulong FillRun(HostMemslot slot, ulong frame, ulong gfn, bool mirror, ulong endFrame)
    {
        int level = TargetLevel(slot, gfn);
        ref TableRef root = ref mirror ? ref _mirrorRoot : ref _directRoot;
        if (root.IsNull)
            root = _pages.Allocate(0, _rootLevel, mirror); // as a miss creates it; a new root is all holes
        AssertTable(root, _rootLevel, mirror);

        var pages = new TdpTablePages(_pages, _sharedGfnMask, mirror);
        TableRef table = root;
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
        int i = start;
        for (; i < last; i++, hostPfn += frames)
        {
            ref ulong entry = ref table[i];
            ulong value = entry;
            if (!TFormat.IsPresent(value))
                entry = TFormat.MakeLeaf(hostPfn, level, writable);
            else if (!TFormat.IsLeaf(value, level))
                break; // a table where the leaf goes: the fault rule replaces it (and flushes)
            // else a leaf of this level: a read hit, nothing changes
        }
        return i == start ? 0 : first + ((ulong)(i - start) << FrameShift(level));
    }

    private TdpPreFaultOutcome RejectPreFault(ulong gpa, ulong size)
    {
        LastRejection = $"pre-fault range [0x{gpa:X}, +0x{size:X}) is empty, not page aligned or wraps";
        return new TdpPreFaultOutcome(TdpAccessStatus.Rejected, 0);
    }
}
