using MmuSpec.Impl.Concurrency;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// A range walk restarted more often than any walk that makes progress can (upstream ed5e484b79e8's livelock):
/// thrown on the walker's thread at the point where it has just dropped mmu_lock, so its op stays pending, the
/// other threads finish, and the schedule fails with this message and the timeline.
/// </summary>
public sealed class NoForwardProgressException(string message) : Exception(message);

/// <summary>
/// Follows the concurrent MMU's range-walk counters op by op during one explored schedule. Coyote runs one
/// thread at a time and switches only at schedule points, so whatever a counter gained since the previous point
/// belongs to the thread now at a point: its current op. Two judgements come of it:
/// <list type="bullet">
/// <item>Liveness: an op whose walks restarted more than <see cref="MaxRestarts"/> times fails the schedule with
/// "no forward progress" (<see cref="NoForwardProgressException"/>). Without it a livelocked walk only ended
/// at Coyote's step bound, which the harness counts as not judged.</item>
/// <item>Coverage: exchanges lost by dirty logging's write-protection, told apart from aging's (both count in
/// <c>RangeWalkExchangesLost</c>) by the op that lost them; and host unmaps run inside another thread's zap yield.</item>
/// </list>
/// The watch adds no schedule point: the schedules explored are the same with it.
/// </summary>
public sealed class RangeWalkWatch
{
    [ThreadStatic] static RangeWalkWatch? current;
    [ThreadStatic] static int currentThread;

    readonly Func<long> restarts, exchangesLost;
    readonly Func<TdpOp, long> bound;
    readonly TdpOp?[] ops;
    readonly long[] opRestarts;
    // Per thread: the yields its zap has taken; whether its unmap released mmu_lock while another thread's zap had yielded.
    readonly long[] zapYields;
    readonly bool[] unmapInsideYield;
    long seenRestarts, seenLost;

    /// <param name="restarts">The MMU's restarts of range walks after a yield (over its life).</param>
    /// <param name="exchangesLost">The MMU's compare-and-exchanges lost by read-side range walks.</param>
    /// <param name="bound">Most restarts an op's walks may take (<see cref="MaxRestarts"/>).</param>
    public RangeWalkWatch(int threads, Func<long> restarts, Func<long> exchangesLost, Func<TdpOp, long> bound)
    {
        (this.restarts, this.exchangesLost, this.bound) = (restarts, exchangesLost, bound);
        ops = new TdpOp?[threads];
        opRestarts = new long[threads];
        zapYields = new long[threads];
        unmapInsideYield = new bool[threads];
        seenRestarts = restarts();
        seenLost = exchangesLost();
    }

    /// <summary>Exchanges dirty logging's write-protection lost (and read again) in this schedule.</summary>
    public int WriteProtectExchangesLost { get; private set; }

    /// <summary>The most restarts one op's walks took, and that op's bound, in this schedule (for the proof that the bound is loose).</summary>
    public long MostRestarts { get; private set; }

    public long BoundOfMost { get; private set; }

    /// <summary>
    /// Host unmaps (`zap_range`, `host_invalidate_start`) that held mmu_lock for write while another thread's zap, begun
    /// and yielded at least once, had not returned: that zap had dropped the lock to yield, with leaves already cleared
    /// (KVM a835429cda91's window). Judged at the unmap's release of the lock, where it still holds it.
    /// </summary>
    public int UnmapsInsideZapYield { get; private set; }

    /// <summary>Thread <paramref name="thread"/> (the calling one) starts <paramref name="op"/>.</summary>
    public void Enter(int thread, TdpOp op)
    {
        current = this;
        currentThread = thread;
        Account(thread);
        ops[thread] = op;
        opRestarts[thread] = 0;
        zapYields[thread] = 0;
        unmapInsideYield[thread] = false;
    }

    /// <summary>Thread <paramref name="thread"/>'s op returned.</summary>
    public void Leave(int thread)
    {
        Account(thread);
        if (unmapInsideYield[thread]) UnmapsInsideZapYield++;
        ops[thread] = null;
        current = null;
    }

    /// <summary>Called at every schedule point of the property (<see cref="CoyoteSparseSchedulePoint"/>), before the scheduler chooses.</summary>
    public static void AtSchedulePoint(SchedulePointKind what)
    {
        if (current is not { } watch) return;
        watch.Account(currentThread);
        watch.SeeZapsAndUnmaps(what);
        // Only where a walk has dropped mmu_lock (ConcurrentTdpMmu.Yield.cs's YieldLock): thrown there, it leaves no lock held.
        if (what == SchedulePointKind.Other && watch.ops[currentThread] is { } op && watch.opRestarts[currentThread] > watch.bound(op))
            throw new NoForwardProgressException(
                $"no forward progress: T{currentThread}'s {op} restarted its range walk {watch.opRestarts[currentThread]} times; " +
                $"a walk that yields only after its cursor moved restarts at most {watch.bound(op)} times over that range");
    }

    void SeeZapsAndUnmaps(SchedulePointKind what)
    {
        int me = currentThread;
        // A write-side zap's only point of this kind is where it has dropped mmu_lock to yield.
        if (what == SchedulePointKind.Other && ops[me] is TdpOp.ZapRange) zapYields[me]++;
        // An unmap about to release the write side holds it: a zap of another thread that yielded before and has not
        // returned cannot hold it, so it is inside a yield.
        if (what == SchedulePointKind.LockRelease && ops[me] is TdpOp.ZapRange or TdpOp.HostInvalidateStart)
            for (int t = 0; t < ops.Length; t++)
                if (t != me && ops[t] is TdpOp.ZapRange && zapYields[t] > 0) unmapInsideYield[me] = true;
    }

    void Account(int thread)
    {
        long r = restarts(), lost = exchangesLost();
        long newRestarts = r - seenRestarts, newLost = lost - seenLost;
        (seenRestarts, seenLost) = (r, lost);
        if (ops[thread] is not { } op) return;
        opRestarts[thread] += newRestarts;
        if (op is TdpOp.SetDirtyLogging { On: true } && newLost > 0) WriteProtectExchangesLost += (int)newLost;
        if (opRestarts[thread] > MostRestarts)
        {
            MostRestarts = opRestarts[thread];
            BoundOfMost = bound(op);
        }
    }

    /// <summary>
    /// The most restarts the walks of <paramref name="op"/> may take: its range's frames (or, for an op without a
    /// range, its slot's, or every slot's), once per root walked. A walk yields only after its cursor moved past
    /// the frame it last yielded at (KVM's yielded_gfn), and the cursor only grows, so it restarts at most once per
    /// frame of the range it walks, whatever the yield interval: with an interval of N and no writer waiting it
    /// restarts about leaves / N times, far fewer (docs/concurrency-testing.md, "Liveness").
    /// </summary>
    public static long MaxRestarts(TdpOp op, VmConfig config, IEnumerable<TdpOp> setupAndProgram)
    {
        var slots = setupAndProgram.OfType<TdpOp.CreateSlot>().ToList();
        ulong SlotPages(int id) => slots.Where(s => s.Id == id).Select(s => s.Pages).DefaultIfEmpty(AllSlots()).Max();
        ulong AllSlots() => slots.Select(s => s.BaseGfn + s.Pages).DefaultIfEmpty(0UL).Max();
        ulong frames = op switch
        {
            TdpOp.ZapRange z => z.EndGfn - z.StartGfn,
            TdpOp.Age a => a.EndGfn - a.StartGfn,
            TdpOp.TestAge t => t.EndGfn - t.StartGfn,
            TdpOp.HostInvalidateStart i => i.EndGfn - i.StartGfn,
            TdpOp.HostInvalidateEnd i => i.EndGfn - i.StartGfn,
            TdpOp.SetDirtyLogging d => SlotPages(d.Id),
            TdpOp.GetDirtyLog g => SlotPages(g.Id),
            TdpOp.CreateSlot c => c.Pages,
            _ => AllSlots(),
        };
        long roots = config.SharedBit is null ? 1 : 2; // a mirror root only beside a shared bit
        return roots * (long)frames;
    }
}
