using System.Diagnostics;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.PageTable;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// Range walks that other operations may run between (docs/tdp-concurrency.md, "Range operations"): a zap
/// under the write side that drops and retakes mmu_lock on the way, and dirty logging's write-protection and
/// aging under the read side, each leaf changed by its own compare-and-exchange. One walker for all of them,
/// after KVM's tdp_iter and tdp_mmu_iter_cond_resched: a cursor frame below which everything is done; each
/// (re)start walks from the root to the entry covering the cursor, never one past it.
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
    /// <summary>
    /// A long walk offers to drop mmu_lock after this many entries (KVM: when the scheduler or a waiter asks;
    /// here a count, so a systematic tester sees yields in short walks), or at once when a writer waits. Set it
    /// before any thread uses the MMU. 0 (the default) yields only to a waiting writer.
    /// </summary>
    public int RangeWalkYieldEvery { get; set; }

    /// <summary>Times a range walk dropped mmu_lock and restarted from the root (over the MMU's life).</summary>
    public long RangeWalkRestarts => Interlocked.Read(ref _rangeWalkRestarts);

    /// <summary>Times a read-side range walk lost a compare-and-exchange and read the entry again.</summary>
    public long RangeWalkExchangesLost => Interlocked.Read(ref _rangeWalkExchangesLost);

    private long _rangeWalkRestarts;
    private long _rangeWalkExchangesLost;

    /// <summary>What a walk does with a leaf it reached.</summary>
    private enum LeafStep
    {
        /// <summary>Done with it: on to the next entry.</summary>
        Next,

        /// <summary>The exchange lost: read the entry again and decide again.</summary>
        Again,

        /// <summary>The walk is over (kvm_tdp_mmu_test_age_gfn found a young leaf).</summary>
        Stop,

        /// <summary>A table link to walk into (<see cref="ILeafRule.VisitTable"/>).</summary>
        Down,
    }

    /// <summary>The per-leaf rule of a walk; a struct, so the call is direct and nothing is allocated.</summary>
    private interface ILeafRule
    {
        /// <param name="leaf">The leaf, its <see cref="PteRef.Value"/> the value just read.</param>
        LeafStep Visit(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef leaf);

        /// <summary>Whether the walk shows the rule each table link on its way down (a constant: the JIT drops the call for the others).</summary>
        static virtual bool VisitsTables => false;

        /// <summary>A table link on the way down: <see cref="LeafStep.Down"/> into it, Next past it, Again to walk again from the root.</summary>
        LeafStep VisitTable(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef link) => LeafStep.Down;
    }

    /// <summary>Which side of mmu_lock a walk holds, and for the read side the epoch slot it walks in.</summary>
    private readonly record struct WalkSide(bool Write, int EpochSlot, bool CanYield)
    {
        public static WalkSide WriteLocked(bool canYield) => new(true, -1, canYield);

        public static WalkSide ReadLocked(int epochSlot) => new(false, epochSlot, true);
    }

    /// <summary>
    /// Visits every leaf overlapping frames [start, end) under <paramref name="rootField"/> in frame order with
    /// <paramref name="rule"/>; false when the rule stopped the walk. The caller holds the side
    /// <paramref name="side"/> names (and for the read side is inside its epoch); the walk may drop and retake
    /// it between entries, so the caller must not rely on anything read before the walk.
    /// <list type="bullet">
    /// <item>A frozen entry belongs to a fault that is changing it: the walk waits for it to go away and walks
    /// again from the root at the cursor (a frozen entry in a table that was unlinked stays frozen; the walk
    /// from the root finds what replaced it), so no leaf is passed unseen.</item>
    /// <item>Yield: only after forward progress since the last one (KVM ed5e484b79e8, iter->yielded_gfn), and
    /// only with nothing left to flush (every leaf a walk unmaps is flushed as it goes, before any yield:
    /// KVM a835429cda91); afterwards the walk restarts from the root at the cursor without stepping past it
    /// (KVM 3a0f64de479c: the entry at the restart position is the next one visited).</item>
    /// </list>
    /// </summary>
    private bool WalkRange<TRule>(ref TRule rule, ref ulong rootField, ulong start, ulong end, WalkSide side, ref bool held)
        where TRule : struct, ILeafRule
    {
        ulong cursor = start;          // every frame below it is done
        ulong yieldedAt = start;       // KVM's yielded_gfn: no yield until the cursor has moved past it
        int sinceYield = 0;
        while (cursor < end)
        {
            if (side.CanYield && cursor != yieldedAt && YieldDue(sinceYield))
            {
                YieldLock(side, ref held);
                yieldedAt = cursor;
                sinceYield = 0;
                Interlocked.Increment(ref _rangeWalkRestarts);
                continue; // from the root, at the cursor
            }

            // Down from the root to the lowest entry that covers the cursor.
            if (!side.Write)
                TSched.Yield(SchedulePointKind.SpteRead);
            ulong root = Volatile.Read(ref rootField);
            if (root == 0)
                return true; // nothing is mapped under this root
            TableRef table = TableRef.At(root, _rootLevel);
            int level = _rootLevel;
            PteRef pte;
            ulong value;
            bool passed = false;
            while (true)
            {
                pte = new PteRef(table, Index(cursor, level), level, AlignDown(cursor, level), 0);
                value = ReadEntry(pte, side);
                if (level == 1 || !TFormat.IsPresent(value) || TFormat.IsLeaf(value, level))
                    break;
                if (TRule.VisitsTables && (passed = PassTable(ref rule, pte.WithValue(value), ref cursor, ref sinceYield)))
                    break;
                level--;
                table = TableRef.At(TFormat.TableAddress(value), level);
            }
            if (passed)
                continue; // from the root, at the cursor

            // Along this table from the cursor's entry.
            while (true)
            {
                if (value == TFormat.FrozenEntry)
                {
                    Debug.Assert(!side.Write, "a frozen entry outlived the fault that froze it");
                    SpinWait spin = default;
                    MmuLock<TSched>.Spin(ref spin);
                    break; // wait it out: walk again from the root at the cursor
                }
                if (TFormat.IsPresent(value) && !TFormat.IsLeaf(value, level))
                    break; // a table: down into it from the root
                if (TFormat.IsPresent(value))
                {
                    LeafStep step = rule.Visit(this, pte.WithValue(value));
                    if (step == LeafStep.Stop)
                        return false;
                    if (step == LeafStep.Again)
                    {
                        Interlocked.Increment(ref _rangeWalkExchangesLost);
                        value = ReadEntry(pte, side);
                        continue;
                    }
                }
                bool hole = !TFormat.IsPresent(value);
                if (!hole)
                    sinceYield++; // the leaves count towards a yield: a run of holes costs little
                cursor = AlignDown(cursor, level) + FramesPerEntry(level);
                if (cursor >= end || Index(cursor, level) == 0 || (side.CanYield && YieldDue(sinceYield)))
                    break; // the range's end, the table's end, or a yield: from the root
                pte = new PteRef(pte.Table, pte.Index + 1, level, cursor, 0);
                // A run of holes gives way to a tester at its first entry only (a fault filling one later in
                // the run is as if before the run or after it), so a sparse table is not 512 schedule points.
                value = ReadEntry(pte, side, givesWay: !hole);
            }
        }
        return true;
    }

    /// <summary>
    /// Shows <paramref name="rule"/> a table link; true when the walk does not go down it: the rule was done with
    /// it (the cursor moves past its range) or lost an exchange on it (the walk reads it again from the root).
    /// </summary>
    private bool PassTable<TRule>(ref TRule rule, PteRef link, ref ulong cursor, ref int sinceYield)
        where TRule : struct, ILeafRule
    {
        LeafStep step = rule.VisitTable(this, link);
        if (step == LeafStep.Down)
            return false;
        if (step == LeafStep.Again)
        {
            Interlocked.Increment(ref _rangeWalkExchangesLost);
            return true;
        }
        cursor = AlignDown(cursor, link.Level) + FramesPerEntry(link.Level);
        sinceYield++;
        return true;
    }

    private ulong ReadEntry(PteRef pte, WalkSide side, bool givesWay = true)
    {
        if (side.Write)
            return pte.Current; // no reader changes an entry while the write side is held
        if (givesWay)
            TSched.Yield(SchedulePointKind.SpteRead);
        return pte.CurrentAcquire;
    }

    /// <summary>Whether to offer mmu_lock now (KVM: need_resched() or rwlock_needbreak()).</summary>
    private bool YieldDue(int sinceYield) =>
        (RangeWalkYieldEvery > 0 && sinceYield >= RangeWalkYieldEvery) || _lock.IsWriterWaiting;

    /// <summary>
    /// Drops mmu_lock (and the epoch, for the read side) and takes it again: others run meanwhile.
    /// <paramref name="held"/> says whether the walk holds it, for the caller's cleanup if a tester stops the
    /// thread while it does not.
    /// </summary>
    private void YieldLock(WalkSide side, ref bool held)
    {
        held = false;
        if (side.Write)
        {
            ExitWrite();
            TSched.Yield(SchedulePointKind.Other);
            EnterWrite();
            held = true;
            return;
        }
        _lock.ExitRead();
        _epochs.Exit(side.EpochSlot);
        ReclaimDeferred();
        TSched.Yield(SchedulePointKind.Other);
        _epochs.Enter(side.EpochSlot);
        _lock.EnterRead();
        held = true;
    }

    /// <summary>Runs <paramref name="rule"/> over gfns [start, end) in both roots (the shared bit added for the direct root); false when it stopped.</summary>
    private bool WalkBothRoots<TRule>(ref TRule rule, ulong start, ulong end, WalkSide side, ref bool held)
        where TRule : struct, ILeafRule
    {
        end = Math.Min(end, _slotGfnLimit); // leaves only map gfns inside slots
        if (start >= end)
            return true;
        return WalkRange(ref rule, ref _directRoot, start + _sharedGfnMask, end + _sharedGfnMask, side, ref held)
            && WalkRange(ref rule, ref _mirrorRoot, start, end, side, ref held);
    }

    /// <summary>tdp_mmu_zap_leafs under the write side: a plain store, the leaf flushed at once.</summary>
    private struct ZapRule : ILeafRule
    {
        public readonly LeafStep Visit(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef leaf)
        {
            leaf.Clear();
            mmu.AddFlush(leaf.Frame & ~mmu._sharedGfnMask, FramesPerEntry(leaf.Level));
            return LeafStep.Next;
        }
    }

    /// <summary>
    /// wrprot_gfn_range (dirty logging, kvm_tdp_mmu_wrprot_slot under mmu_lock held for read): W goes,
    /// MMU-writable stays, by compare-and-exchange against the value read; a lost one reads again.
    /// </summary>
    private struct WriteProtectForLogRule : ILeafRule
    {
        public readonly LeafStep Visit(ConcurrentTdpMmu<TFormat, TSched> mmu, PteRef leaf)
        {
            if (!TFormat.IsWritable(leaf.Value))
                return LeafStep.Next;
            return TryExchange(leaf, Tdp.TdpLeaf<TFormat>.ProtectedForLog(leaf.Value)) ? LeafStep.Next : LeafStep.Again;
        }
    }
}
