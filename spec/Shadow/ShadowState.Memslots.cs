using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

public sealed partial record ShadowState
{
    // ---- memslots and dirty logging (as the TDP model, with every leaf 4 KiB; docs/shadow-model.md, "Memslots") ----

    const int MaxSlotId = 31;

    ShadowStepped CreateSlot(ShadowOp.CreateSlot c)
    {
        if (c.Id is < 0 or > MaxSlotId) return Reject($"slot id {c.Id} is not in 0..{MaxSlotId}");
        if (Slots.ContainsKey(c.Id)) return Reject($"slot {c.Id} already exists");
        if (SlotMemory.RangeProblem(Slots, c.BaseGfn, c.Pages, Config.GfnLimit, ignoreId: null) is { } problem) return Reject(problem);
        if (SlotMemory.HostRangeProblem(Slots, c.HostPfnBase, c.Pages, ShadowConfig.HostPfnLimit, "shadow entries") is { } hostProblem)
            return Reject(hostProblem);
        var slot = new HostMemslot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, PageSize.Size4K, c.ReadOnly, DirtyLogging: false);
        return Done(this with { Slots = Slots.Add(c.Id, slot) });
    }

    ShadowState SetDirtyLogging(HostMemslot s, bool on)
    {
        if (!on)
            return this with { Slots = Slots.SetItem(s.Id, s.WithDirtyLogging(false)), DirtyBitmaps = DirtyBitmaps.Remove(s.Id) };
        if (s.DirtyLogging) return this;
        // Every leaf of the slot loses W, so the next write to each page faults and is logged.
        return UpdateLeaves(l => l.Writable && s.Contains(l.Gfn), l => l.WithWritable(false)) with
        {
            Slots = Slots.SetItem(s.Id, s.WithDirtyLogging(true)),
            DirtyBitmaps = DirtyBitmaps.SetItem(s.Id, ImmutableSortedSet<ulong>.Empty),
        };
    }

    ShadowStepped GetDirtyLog(HostMemslot s)
    {
        if (!s.DirtyLogging) return Reject($"slot {s.Id} does not log dirty pages");
        var gfns = DirtyBitmaps[s.Id].Select(offset => s.BaseGfn + offset).ToImmutableArray();
        var state = this with { DirtyBitmaps = DirtyBitmaps.SetItem(s.Id, ImmutableSortedSet<ulong>.Empty) };
        foreach (ulong gfn in gfns) state = state.WriteProtect(gfn);
        return new ShadowStepped(state, new ShadowResult.DirtyLog(gfns));
    }

    ShadowState MarkDirty(HostMemslot slot, ulong gfn) =>
        slot.DirtyLogging ? this with { DirtyBitmaps = DirtyBitmaps.SetItem(slot.Id, DirtyBitmaps[slot.Id].Add(gfn - slot.BaseGfn)) } : this;

    /// <summary>Guest-physical memory as the guest sees it now (memslots over host memory).</summary>
    public GuestMemory GuestMemoryView() => SlotMemory.View(Slots, HostMemory);

    /// <summary>The <paramref name="size"/>-byte guest value at <paramref name="gpa"/>; 0 outside every slot.</summary>
    public ulong ReadGuest(ulong gpa, int size)
    {
        if (SlotMemory.SlotOf(Slots, gpa >> 12) is not { } slot) return 0;
        ulong hpa = (slot.HostPfn(gpa >> 12) << 12) | (gpa & 0xFFF);
        ulong word = HostMemory.GetValueOrDefault(hpa & ~7UL) >> (int)(hpa & 7) * 8;
        return size == 8 ? word : word & 0xFFFF_FFFF;
    }

    ShadowState StoreGuest(HostMemslot slot, ulong gpa, ulong value, int size) =>
        this with { HostMemory = SlotMemory.Store(HostMemory, (slot.HostPfn(gpa >> 12) << 12) | (gpa & 0xFFF), value, size) };
}
