using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// MMU-notifier scenarios for the notifier property only (<c>notifiers</c> on; docs/tdp-model.md, "MMU
/// notifiers"): a range of a slot is invalidated around faults inside and beside it, so faults retry while it
/// is in progress, huge leaves stay clear of it, and after End faults map the moved frames. Some scenarios
/// overlap a second invalidation, pre-fault over the range, try a memslot update (refused while one is open),
/// or end a range that is not open (refused).
/// </summary>
internal sealed partial class TdpCaseBuilder
{
    /// <summary>The first op of a scenario; the rest are queued.</summary>
    public TdpOp NotifierScenario()
    {
        var (id, s) = slots.ElementAt(rng.Next(slots.Count));
        ulong length = rng.Next(6) switch
        {
            0 => 1,
            1 => (ulong)rng.Next(2, 16),
            2 => 512,
            3 => (ulong)rng.Next(1, 2000),
            4 => s.Pages,                                   // the whole slot
            _ => (ulong)rng.Next(1, 64),
        };
        ulong start = s.Base + (ulong)rng.NextInt64(0, (long)s.Pages);
        if (rng.Next(4) == 0) start &= ~511UL;              // from a 2 MiB boundary
        if (rng.Next(8) == 0 && start > 4) start -= (ulong)rng.Next(1, 4);   // from just before the slot, sometimes
        var range = (Start: start, End: start + length);
        ulong Inside() => range.Start + (ulong)rng.NextInt64(0, (long)(range.End - range.Start));
        ulong Beside() => rng.Next(2) == 0 ? range.End + (ulong)rng.Next(0, 600) : range.Start - Math.Min(range.Start, (ulong)rng.Next(1, 600));
        bool shared = rng.Next(2) == 0;
        TdpOp.AccessGpa At(ulong gfn) => AccessAt(gfn, rng.Next(10) < 6 ? AccessType.Read : AccessType.Write, rng.Next(4) == 0 ? !shared : shared);

        var first = At(Inside());                          // a mapping for Start to zap
        if (rng.Next(3) == 0) pending.Enqueue(At(Beside()));
        pending.Enqueue(new TdpOp.HostInvalidateStart(range.Start, range.End));
        (ulong Start, ulong End)? other = null;
        if (rng.Next(3) == 0)
        {
            // A second invalidation overlapping the first (or just beside it): the retry range is their hull.
            ulong o = Inside();
            other = rng.Next(2) == 0 ? (o, o + (ulong)rng.Next(1, 1024)) : (o >= 700 ? o - (ulong)rng.Next(1, 700) : 0, o + 1);
            pending.Enqueue(new TdpOp.HostInvalidateStart(other.Value.Start, other.Value.End));
        }
        for (int i = rng.Next(1, 4); i > 0; i--)
            pending.Enqueue(rng.Next(3) == 0 ? At(Beside()) : At(Inside()));      // retries inside, small leaves beside
        switch (rng.Next(8))
        {
            case 0: pending.Enqueue(new TdpOp.SetDirtyLogging(id, rng.Next(2) == 0)); break;    // refused while open
            case 1: pending.Enqueue(new TdpOp.HostInvalidateEnd(range.Start, range.End + 1)); break;   // matches nothing
            case 2: pending.Enqueue(new TdpOp.PreFault(Math.Max(s.Base, range.Start - Math.Min(range.Start, 4)) << 12, (ulong)rng.Next(1, 16) << 12)); break;
            case 3: pending.Enqueue(new TdpOp.ZapRange(range.Start, range.End)); break;
        }
        if (other is { } o2 && rng.Next(2) == 0)
        {
            pending.Enqueue(new TdpOp.HostInvalidateEnd(o2.Start, o2.End));
            pending.Enqueue(At(Inside()));                  // still in the retry range: the first is open
        }
        if (rng.Next(12) != 0)                              // rarely left open to the end of the case
            pending.Enqueue(new TdpOp.HostInvalidateEnd(range.Start, range.End));
        if (rng.Next(10) == 0)
            pending.Enqueue(new TdpOp.HostInvalidateEnd(range.Start, range.End));   // a second End: nothing open
        for (int i = rng.Next(1, 4); i > 0; i--)
            pending.Enqueue(At(rng.Next(4) == 0 ? Beside() : Inside()));           // the moved frames
        if (rng.Next(4) == 0)
            pending.Enqueue(new TdpOp.PreFault((range.Start & ~511UL) << 12, 512UL << 12));
        if (other is { } o3 && rng.Next(3) != 0)
            pending.Enqueue(new TdpOp.HostInvalidateEnd(o3.Start, o3.End));
        return first;
    }
}
