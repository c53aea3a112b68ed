using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>The MMU-notifier situations (docs/tdp-model.md, "MMU notifiers"), expected of the notifier property only.</summary>
public static partial class TdpCoverage
{
    const string StartZaps = "notifier: invalidation start zaps leaves", StartEmpty = "notifier: invalidation start over nothing mapped",
        Overlapping = "notifier: invalidation overlapping another in progress", Retried = "notifier: fault retried after an invalidation",
        MovedFrameMapped = "notifier: fault in a range after End maps the new frame",
        EndRejected = "notifier: End without a matching Start rejected", SlotUpdateRefused = "notifier: memslot update refused while in progress",
        NotifierLowered = "notifier: leaf level lowered by host pages under change or moved",
        PreFaultRetried = "notifier: pre-fault retried, nothing mapped", EndCloses = "notifier: End closes an invalidation";

    // A property, not a field: All (in the other part of the class) reads it, and field initializers of two
    // partial files run in no defined order.
    static string[] NotifierSituations =>
        [StartZaps, StartEmpty, Overlapping, Retried, MovedFrameMapped, EndRejected, EndCloses, SlotUpdateRefused, NotifierLowered, PreFaultRetried];

    static void Notifier(TdpOp op, VmResult r, TdpState before, int removed, Action<string> hit)
    {
        if (r is VmResult.Rejected)
        {
            if (op is TdpOp.HostInvalidateEnd) hit(EndRejected);
            return;
        }
        if (op is TdpOp.HostInvalidateEnd) { hit(EndCloses); return; }
        var start = (TdpOp.HostInvalidateStart)op;
        hit(removed > 0 ? StartZaps : StartEmpty);
        if (before.Notifier.InProgress.Any(g => g.Overlaps(new GfnRange(start.StartGfn, start.EndGfn)))) hit(Overlapping);
    }

    /// <summary>A memslot update the spec refused only because invalidations are in progress.</summary>
    static void SlotUpdate(TdpOp op, VmResult r, TdpState before, Action<string> hit)
    {
        if (r is VmResult.Rejected && !before.Notifier.InProgress.IsEmpty
            && op is TdpOp.CreateSlot or TdpOp.DeleteSlot or TdpOp.MoveSlot or TdpOp.SetDirtyLogging
            && (before with { Notifier = HostNotifierState.Initial }).Step(op).Result is not VmResult.Rejected)
            hit(SlotUpdateRefused);
    }

    /// <summary>The gfn's page has moved: a new leaf for it names the other frame.</summary>
    static bool MapsMovedFrame(TdpState before, ulong gfn) =>
        before.Slots.Values.FirstOrDefault(s => s.Contains(gfn)) is { } slot && before.HostFrame(slot, gfn) != slot.HostPfn(gfn);

    /// <summary>Without the notifier's state the fault would have mapped a bigger leaf.</summary>
    static bool LoweredByNotifier(TdpState after, HostMemslot slot, Spte.Leaf leaf) =>
        !ReferenceEquals(after.Notifier, HostNotifierState.Initial) && !slot.DirtyLogging
        && (after with { Notifier = HostNotifierState.Initial }).MappingLevel(slot, leaf.Gfn) > leaf.Level;
}
