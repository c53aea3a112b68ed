using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// The fault handler under mmu_lock held for read (KVM's kvm_tdp_mmu_map with a shared lock): the steps
/// of docs/tdp-model.md, with every entry read once and changed only by compare-and-exchange
/// (tdp_mmu_set_spte_atomic). A lost exchange or a frozen entry ends the fault with Retry (RET_PF_RETRY),
/// its unlinked pages back in the vCPU's cache.
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    private const ulong PageOffsetMask = (1UL << PageShift) - 1;

    internal TdpVcpuOutcome Access(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, AccessType type)
    {
        ThrowIfDisposed();
        if ((gpa >> _gpaBits) != 0 || (uint)type > (uint)AccessType.Fetch)
            return RejectAccess(vcpu, gpa, type);
        if (TryTlb(vcpu, gpa, type, out TdpVcpuOutcome hit)) // the vCPU's flush requests, then its TLB (ConcurrentTdpMmu.Tlb.cs)
            return hit;

        if (type == AccessType.Write && _fastFaultsUseful && TryFastFault(vcpu, gpa, out TdpVcpuOutcome fast))
            return Cache(vcpu, gpa, type, fast);
        TopUp(vcpu); // before mmu_lock: nothing is allocated under it
        var (sequence, migrated) = ReadHostPages(); // before mmu_lock too (ConcurrentTdpMmu.Notifier.cs)
        vcpu.BeginFault();
        TdpVcpuOutcome outcome;
        // The epoch is published before the lock: the lock's compare-and-exchange is the fence that
        // orders it before the walk's first read, so entering costs no atomic of its own.
        _epochs.Enter(vcpu.Id);
        _lock.EnterRead();
        try
        {
            outcome = Fault(vcpu, gpa, type, sequence, migrated);
        }
        finally
        {
            _lock.ExitRead();
            DebugWalkDone(vcpu.Id);
            _epochs.Exit(vcpu.Id);
        }
        if (outcome.IsRetry)
            vcpu.Unwind(); // what it took and did not link goes back: a lost race publishes nothing
        ReclaimDeferred();
        return Cache(vcpu, gpa, type, outcome);
    }

    private TdpVcpuOutcome Fault(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, AccessType type, ulong sequence, HostFrameRanges migrated)
    {
        // Step 1: the frame indexes the root; the gfn (shared bit stripped) names slots and bitmaps.
        ulong frame = gpa >> PageShift;
        ulong gfn = frame & ~_sharedGfnMask;
        bool mirror = _sharedGfnMask != 0 && frame == gfn;

        // Steps 2 and 3: no slot, or a write to a read-only slot: exit to userspace, nothing changes.
        if (FindSlot(vcpu, gfn) is not HostMemslot slot)
            return TdpAccessOutcome.MmioExit;
        bool write = type == AccessType.Write;
        if (write && slot.ReadOnly)
            return TdpAccessOutcome.MmioExit;
        // A write to a write-tracked gfn exits for emulation (KVM's page_fault_handle_page_track).
        if (write && IsWriteTracked(gfn))
            return TdpAccessOutcome.MmioExit;
        // Slots, policy and tracking are stable under the read side.
        int target = FaultLevel(slot, gfn, migrated);

        // The root exists from the first fault that needs it (KVM allocates roots under the read side too).
        ref ulong rootField = ref mirror ? ref _mirrorRoot : ref _directRoot;
        TSched.Yield(SchedulePointKind.SpteRead);
        ulong root = Volatile.Read(ref rootField);
        if (root == 0)
        {
            if (FaultIsStale(gfn, sequence))
                return TdpVcpuOutcome.Retry; // a miss (below), checked before the root goes in
            TableRef fresh = vcpu.TakePage(0, _rootLevel, mirror);
            TSched.Yield(SchedulePointKind.SpteExchange);
            if (Interlocked.CompareExchange(ref rootField, fresh.Address, 0) != 0)
                return TdpVcpuOutcome.Retry; // another vCPU installed it first
            vcpu.CommitTaken(); // linked: a later loss in this fault must not take the root back
            root = fresh.Address;
        }

        // Walk down, each entry read once (acquire: a table linked by another vCPU is seen initialised).
        // atTarget: the entry at the target level when it holds a table (a huge leaf may replace it).
        TableRef table = TableRef.At(root, _rootLevel);
        AssertTable(table, _rootLevel, mirror);
        DebugWalking(vcpu.Id, table, _rootLevel);
        int level = _rootLevel;
        PteRef atTarget = default;
        PteRef pte;
        while (true)
        {
            int index = Index(frame, level);
            pte = new PteRef(table, index, level, AlignDown(frame, level), 0);
            TSched.Yield(SchedulePointKind.SpteRead);
            ulong value = pte.CurrentAcquire;
            if (value == TFormat.FrozenEntry)
                return TdpVcpuOutcome.Retry; // another vCPU owns this entry until it writes the final value
            pte = pte.WithValue(value);
            if (!TFormat.IsPresent(value) || TFormat.IsLeaf(value, level))
                break;
            if (level == target)
                atTarget = pte;
            level--;
            table = TableRef.At(TFormat.TableAddress(value), level);
            AssertTable(table, level, mirror);
            DebugWalking(vcpu.Id, table, level);
        }

        ulong leaf = pte.Value;
        if (TFormat.IsPresent(leaf))
        {
            // Step 4: a hit.
            ulong hpa = ((TFormat.LeafPfn(leaf) + (frame & (FramesPerEntry(level) - 1))) << PageShift) | (gpa & PageOffsetMask);
            if (!write || TFormat.IsWritable(leaf))
                return _accessedMask == 0 ? TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: false) : TouchHit(pte, hpa, level, write);
            // A fault: retry if the host changed or is changing the page since it looked it up (is_page_fault_stale).
            if (FaultIsStale(gfn, sequence))
                return TdpVcpuOutcome.Retry;

            // Step 5: a write-protection fault; the leaf becomes writable if no one changed it meanwhile.
            if ((level == 1 || !slot.DirtyLogging) && !TracksWithin(pte.Frame & ~_sharedGfnMask, level))
            {
                if (!TryExchange(pte, TdpLeaf<TFormat>.MadeWritable(leaf) | TouchBits(write)))
                    return TdpVcpuOutcome.Retry;
                MarkDirty(slot, gfn);
                return TdpAccessOutcome.Mapped(hpa, PageShiftOf(level), faulted: true);
            }

            // A huge leaf of a logging slot, or over a write-tracked gfn, goes (KVM's tdp_mmu_zap_spte_atomic:
            // frozen, flushed over all it mapped, then cleared), and the access continues as a miss.
            if (!TryExchange(pte, TFormat.FrozenEntry))
                return TdpVcpuOutcome.Retry;
            AddFlush(pte.Frame & ~_sharedGfnMask, FramesPerEntry(level));
            TSched.Yield(SchedulePointKind.SpteExchange);
            pte.WriteRelease(0);
            pte = pte.WithValue(0);
        }
        else if (FaultIsStale(gfn, sequence))
            return TdpVcpuOutcome.Retry; // the same check for a miss, before anything is linked
        return Miss(vcpu, slot, gpa, gfn, write, mirror, target, pte, atTarget, migrated);
    }

    /// <summary>
    /// Step 6. <paramref name="stop"/> is the hole the walk stopped at. At or above the target level the new
    /// tables are built privately below it and published by one compare-and-exchange of the hole (all or
    /// nothing). Below it, a table sits where the leaf goes (<paramref name="atTarget"/>): that entry is frozen,
    /// the subtree under it handled, everything it covered flushed, and only then the leaf written.
    /// </summary>
    private TdpVcpuOutcome Miss(ConcurrentTdpVcpu<TFormat, TSched> vcpu, HostMemslot slot, ulong gpa, ulong gfn, bool write,
        bool mirror, int target, PteRef stop, PteRef atTarget, HostFrameRanges migrated)
    {
        ulong leafGfn = AlignDown(gfn, target);
        ulong hostPfn = slot.HostPfnBase + (leafGfn - slot.BaseGfn);
        if (!migrated.IsEmpty)
            hostPfn = migrated.Current(hostPfn); // where the fault found the page before taking the lock
        bool logging = slot.DirtyLogging;
        bool tracked = IsWriteTracked(gfn); // a write to it exited; a huge target covers none (LowerForTracking)
        ulong leaf = TdpLeaf<TFormat>.Make(hostPfn, target, hostWritable: !slot.ReadOnly, writeTracked: tracked,
            writable: !slot.ReadOnly && !tracked && (!logging || write)) | TouchBits(write);
        ulong frame = gpa >> PageShift;
        Debug.Assert(stop.Value == 0, "a miss stops at a hole");

        if (stop.Level >= target)
        {
            ulong top = leaf;
            TableRef first = default, upper = default;
            for (int l = stop.Level - 1; l >= target; l--)
            {
                // A table at level l covers what the entry above it covers (its gfn has no shared bit).
                TableRef t = vcpu.TakePage(AlignDown(frame, l + 1) & ~_sharedGfnMask, l, mirror);
                if (upper.IsNull)
                    first = t;
                else
                    upper[Index(frame, l + 1)] = TFormat.MakeTable(t.Address);
                upper = t;
            }
            if (!upper.IsNull)
            {
                upper[Index(frame, target)] = leaf;
                top = TFormat.MakeTable(first.Address);
            }
            if (!TryExchange(stop, top))
                return TdpVcpuOutcome.Retry; // tdp_mmu_link_sp lost: the caller takes the tables back
        }
        else
        {
            Debug.Assert(atTarget.Level == target, "the walk went below the target level through a table there");
            ulong old = atTarget.Value;
            if (!TryExchange(atTarget, TFormat.FrozenEntry))
                return TdpVcpuOutcome.Retry;
            long tag = _epochs.Retire(); // after the unlink: vCPUs entering from now on cannot reach the subtree
            HandleRemovedTable(TableRef.At(TFormat.TableAddress(old), target - 1), target - 1, tag);
            // The hardware may hold the link for any gfn the table covered: flush the new leaf's whole range
            // before the frozen entry is replaced (KVM's tdp_mmu_map_handle_target_level).
            AddFlush(leafGfn, FramesPerEntry(target));
            TSched.Yield(SchedulePointKind.SpteExchange);
            atTarget.WriteRelease(leaf);
        }

        if (write && logging)
            MarkDirty(slot, gfn);
        ulong hpa = ((hostPfn + (gfn - leafGfn)) << PageShift) | (gpa & PageOffsetMask);
        return TdpAccessOutcome.Mapped(hpa, PageShiftOf(target), faulted: true);
    }

    /// <summary>The level a fault at <paramref name="gfn"/> maps: the slot's and the policy's, lowered for write tracking and for host pages not settled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int FaultLevel(HostMemslot slot, ulong gfn, HostFrameRanges migrated)
    {
        int target = LowerForTracking(gfn, slot.TargetLevel(gfn, _policyLevel));
        if (!migrated.IsEmpty || _notifier.InProgress != 0)
            target = SettledLevel(slot, gfn, target, migrated);
        return target;
    }

    /// <summary>tdp_mmu_set_spte_atomic: the entry goes from the value the walk read to <paramref name="value"/>, or nothing happens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryExchange(PteRef pte, ulong value)
    {
        TSched.Yield(SchedulePointKind.SpteExchange);
        return pte.CompareExchange(value, pte.Value) == pte.Value;
    }

    /// <summary>The slot holding <paramref name="gfn"/>: the vCPU's last one when still valid, else a scan (nothing is written shared).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private HostMemslot? FindSlot(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gfn)
    {
        HostMemslot? last = vcpu.LastSlot;
        if (last is not null && vcpu.LastSlotGeneration == _slotGeneration && last.Contains(gfn))
            return last;
        foreach (HostMemslot slot in _slots.All)
        {
            if (slot.Contains(gfn))
            {
                vcpu.LastSlot = slot;
                vcpu.LastSlotGeneration = _slotGeneration;
                return slot;
            }
        }
        return null;
    }

    /// <summary>Marks a written gfn in its slot's bitmap; bitmaps are shared by the vCPUs, so under the side lock.</summary>
    private void MarkDirty(HostMemslot slot, ulong gfn)
    {
        if (slot.Dirty is not DirtyBitmap dirty)
            return;
        _side.Enter();
        dirty.Mark(gfn - slot.BaseGfn);
        _side.Exit();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private TdpVcpuOutcome RejectAccess(ConcurrentTdpVcpu<TFormat, TSched> vcpu, ulong gpa, AccessType type)
    {
        vcpu.LastRejection = (uint)type > (uint)AccessType.Fetch
            ? $"unknown access type {type}"
            : $"gpa 0x{gpa:X} is not below 2^{_gpaBits}";
        return TdpAccessOutcome.Rejected;
    }
}
