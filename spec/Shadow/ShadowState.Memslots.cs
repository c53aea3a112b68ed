using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

public sealed partial record ShadowState
{
    // ---- memslots and dirty logging (as the TDP model, with every leaf 4 KiB; docs/shadow-model.md, "Memslots") ----
    // Their rules are HostMemslots' (spec/Memory); the MMU's part is dropping and write-protecting leaves.

    /// <summary>The memslots by id.</summary>
    public ImmutableSortedDictionary<int, HostMemslot> Slots => Memslots.Slots;

    /// <summary>Each logging slot's dirty bitmap (slot-relative offsets).</summary>
    public ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>> DirtyBitmaps => Memslots.DirtyBitmaps;

    ShadowState With(HostMemslots memslots) => this with { Memslots = memslots };

    ShadowStepped CreateSlot(ShadowOp.CreateSlot c)
    {
        var slot = new HostMemslot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, PageSize.Size4K, c.ReadOnly, DirtyLogging: false);
        return Memslots.CreateProblem(slot, Config.GfnLimit, ShadowConfig.HostPfnLimit, "shadow entries") is { } problem
            ? Reject(problem)
            : Done(With(Memslots.Create(slot)));
    }

    ShadowState SetDirtyLogging(HostMemslot s, bool on)
    {
        // Enabling: every leaf of the slot loses W, so the next write to each page faults and is logged.
        var state = on && !s.DirtyLogging ? UpdateLeaves(l => l.Writable && s.Contains(l.Gfn), l => l.WithWritable(false)) : this;
        return state.With(Memslots.SetDirtyLogging(s, on));
    }

    ShadowStepped GetDirtyLog(HostMemslot s)
    {
        var result = Memslots.FetchDirtyLog(s, out var after);
        var state = With(after);
        if (result is VmResult.DirtyLog log)
            foreach (ulong gfn in log.Gfns) state = state.WriteProtect(gfn);
        return new ShadowStepped(state, result);
    }

    ShadowState MarkDirty(HostMemslot slot, ulong gfn) => With(Memslots.MarkDirty(slot, gfn));

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
