using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// Dirty logging turned off: the links a huge leaf could now replace go, under the read side beside faults
/// (docs/tdp-concurrency.md, "Zapping collapsible links"; KVM's kvm_tdp_mmu_zap_collapsible_sptes with
/// lockdep_assert_held_read, zap_collapsible_spte_range, Linux 6.1-6.12).
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    /// <summary>Table links the collapsible zap dropped (over the MMU's life).</summary>
    public long CollapsibleLinksZapped => Interlocked.Read(ref _collapsibleLinksZapped);

    private long _collapsibleLinksZapped;

    /// <summary>
    /// The collapsible zap over gfns [start, end) (the slot whose logging just went off) under the read side, in the
    /// host's epoch slot, one host walk at a time: the shared range walker (yield and restart) shows the rule each
    /// link at 1 GiB and 2 MiB. Each link it drops is frozen by compare-and-exchange against the value read, its
    /// subtree handled and retired for a deferred free, its range flushed, and only then cleared
    /// (tdp_mmu_zap_spte_atomic); a lost exchange reads the link again. Faults run between two links.
    /// </summary>
    private void ZapCollapsible(ulong start, ulong end)
    {
        ThrowIfDisposed();
        _hostWalk.Enter();
        _epochs.Enter(Epochs<TSched>.HostSlot);
        _lock.EnterRead();
        bool held = true;
        try
        {
            var rule = new CollapsibleRule(start, end);
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
    }

    /// <summary>
    /// Whether the link at <paramref name="link"/> may go: a huge-leaf level, its first gfn in [start, end) (KVM skips
    /// an iter.gfn outside the slot), and a fault there would now map at the link's level or above (the fault's own
    /// rule, <see cref="FaultLevel"/>: slots, policy, tracking and the notifier are stable under the read side).
    /// </summary>
    private bool IsCollapsible(PteRef link, ulong start, ulong end)
    {
        ulong gfn = link.Frame & ~_sharedGfnMask;
        if (link.Level > LargestLeafLevel || gfn < start || gfn >= end)
            return false;
        foreach (HostMemslot slot in _slots.All)
            if (slot.Contains(gfn))
                return FaultLevel(slot, gfn, _notifier.Migrated) >= link.Level;
        return false;
    }

    /// <summary>tdp_mmu_zap_spte_atomic on a link: frozen (or lost), subtree retired, range flushed, then cleared.</summary>
    private bool TryZapLink(PteRef link)
    {
        if (!TryExchange(link, TFormat.FrozenEntry))
            return false;
        long tag = _epochs.Retire(); // after the unlink: walkers entering from now on cannot reach the subtree
        HandleRemovedTable(TableRef.At(TFormat.TableAddress(link.Value), link.Level - 1), link.Level - 1, tag);
        AddFlush(link.Frame & ~_sharedGfnMask, FramesPerEntry(link.Level)); // the hardware may cache the link for any gfn under it
        TSched.Yield(SchedulePointKind.SpteExchange);
        link.WriteRelease(0);
        Interlocked.Increment(ref _collapsibleLinksZapped);
        return true;
    }

    /// <summary>
    /// zap_collapsible_spte_range's rule: entries at 2 MiB and above only (for_each_tdp_pte_min_level(PG_LEVEL_2M)).
    /// A collapsible link is zapped; a 1 GiB link that is not is walked into, a 2 MiB one passed; leaves are passed.
    /// </summary>
    private readonly struct CollapsibleRule(ulong start, ulong end) : ILeafRule
    {
        public static bool VisitsTables => true;

        public LeafStep Visit(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef leaf) => LeafStep.Next;

        public LeafStep VisitTable(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef link)
        {
            if (!mmu.IsCollapsible(link, start, end))
                return link.Level > 2 ? LeafStep.Down : LeafStep.Next;
            return mmu.TryZapLink(link) ? LeafStep.Next : LeafStep.Again;
        }
    }
}
