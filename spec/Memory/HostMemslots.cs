using System.Collections.Immutable;

namespace MmuSpec.Spec.Memory;

/// <summary>
/// A VM's memslots and their dirty bitmaps, with the rules both MMUs apply to them: which slots may be
/// created or moved, and dirty logging (KVM_MEM_LOG_DIRTY_PAGES, KVM_GET_DIRTY_LOG). What an MMU does to
/// its own entries when a slot changes (zap, write-protect) stays with the MMU. A bitmap holds
/// slot-relative frame offsets, as KVM's slot->dirty_bitmap does, so it travels with a moved slot.
/// </summary>
public sealed record HostMemslots(
    ImmutableSortedDictionary<int, HostMemslot> Slots,
    ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>> DirtyBitmaps)
{
    /// <summary>Slot ids are 0..MaxSlotId (KVM_USER_MEM_SLOTS, reduced to 32).</summary>
    public const int MaxSlotId = 31;

    public static HostMemslots Empty { get; } = new(
        ImmutableSortedDictionary<int, HostMemslot>.Empty, ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>>.Empty);

    /// <summary>Slot <paramref name="id"/>, or null.</summary>
    public HostMemslot? this[int id] => Slots.GetValueOrDefault(id);

    /// <summary>Why an operation on slot <paramref name="id"/> is rejected when there is no such slot.</summary>
    public static string NoSlot(int id) => $"there is no slot {id}";

    /// <summary>Why a new slot cannot take id <paramref name="id"/>, or null: out of range or taken.</summary>
    public string? IdProblem(int id) =>
        id is < 0 or > MaxSlotId ? $"slot id {id} is not in 0..{MaxSlotId}"
        : Slots.ContainsKey(id) ? $"slot {id} already exists"
        : null;

    /// <summary>
    /// Why <paramref name="slot"/>'s ranges cannot be a new slot, or null: its gfns are empty, reach
    /// <paramref name="gfnLimit"/> or overlap a slot, or its host frames reach <paramref name="hostPfnLimit"/>
    /// (what <paramref name="hostLimitReason"/> can address) or back another slot.
    /// </summary>
    public string? RangeProblem(HostMemslot slot, ulong gfnLimit, ulong hostPfnLimit, string hostLimitReason) =>
        SlotMemory.RangeProblem(Slots, slot.BaseGfn, slot.Pages, gfnLimit, ignoreId: null)
        ?? SlotMemory.HostRangeProblem(Slots, slot.HostPfnBase, slot.Pages, hostPfnLimit, hostLimitReason);

    /// <summary>Why <paramref name="slot"/> cannot be created, or null (<see cref="IdProblem"/>, then <see cref="RangeProblem"/>).</summary>
    public string? CreateProblem(HostMemslot slot, ulong gfnLimit, ulong hostPfnLimit, string hostLimitReason) =>
        IdProblem(slot.Id) ?? RangeProblem(slot, gfnLimit, hostPfnLimit, hostLimitReason);

    /// <summary>The slots with <paramref name="slot"/> added (check <see cref="CreateProblem"/> first).</summary>
    public HostMemslots Create(HostMemslot slot) => this with { Slots = Slots.Add(slot.Id, slot) };

    /// <summary>The slots without <paramref name="slot"/> and its bitmap.</summary>
    public HostMemslots Delete(HostMemslot slot) =>
        this with { Slots = Slots.Remove(slot.Id), DirtyBitmaps = DirtyBitmaps.Remove(slot.Id) };

    /// <summary>Why <paramref name="slot"/> cannot move to <paramref name="newBaseGfn"/> (below <paramref name="gfnLimit"/>), or null.</summary>
    public string? MoveProblem(HostMemslot slot, ulong newBaseGfn, ulong gfnLimit) =>
        SlotMemory.RangeProblem(Slots, newBaseGfn, slot.Pages, gfnLimit, ignoreId: slot.Id);

    /// <summary>
    /// KVM_MR_MOVE: the slot keeps its host backing, flags and (slot-relative) bitmap at its new gfns.
    /// </summary>
    public HostMemslots Move(HostMemslot slot, ulong newBaseGfn) =>
        this with { Slots = Slots.SetItem(slot.Id, slot.WithBaseGfn(newBaseGfn)) };

    /// <summary>
    /// KVM_MEM_LOG_DIRTY_PAGES set or cleared. Setting it on a slot that does not log starts an empty
    /// bitmap (the MMU then write-protects the slot, so the next write to each page faults and is
    /// logged); setting it again changes nothing. Clearing it drops the bitmap.
    /// </summary>
    public HostMemslots SetDirtyLogging(HostMemslot slot, bool on)
    {
        if (!on)
            return this with { Slots = Slots.SetItem(slot.Id, slot.WithDirtyLogging(false)), DirtyBitmaps = DirtyBitmaps.Remove(slot.Id) };
        if (slot.DirtyLogging) return this;
        return this with
        {
            Slots = Slots.SetItem(slot.Id, slot.WithDirtyLogging(true)),
            DirtyBitmaps = DirtyBitmaps.SetItem(slot.Id, ImmutableSortedSet<ulong>.Empty),
        };
    }

    /// <summary>
    /// A write reached <paramref name="gfn"/> of <paramref name="slot"/> (KVM's mark_page_dirty): its
    /// offset goes into the bitmap while the slot logs, nothing happens otherwise.
    /// </summary>
    public HostMemslots MarkDirty(HostMemslot slot, ulong gfn) =>
        slot.DirtyLogging ? this with { DirtyBitmaps = DirtyBitmaps.SetItem(slot.Id, DirtyBitmaps[slot.Id].Add(gfn - slot.BaseGfn)) } : this;

    /// <summary>
    /// KVM_GET_DIRTY_LOG without manual protection: the frames written since the last fetch, as sorted
    /// absolute gfns, and <paramref name="after"/> with the bitmap cleared; the MMU then write-protects
    /// each returned gfn so its next write is logged again. Rejected, with <paramref name="after"/>
    /// unchanged, when the slot does not log (KVM: -ENOENT).
    /// </summary>
    public VmResult FetchDirtyLog(HostMemslot slot, out HostMemslots after)
    {
        after = this;
        if (!slot.DirtyLogging) return new VmResult.Rejected($"slot {slot.Id} does not log dirty pages");
        var gfns = DirtyBitmaps[slot.Id].Select(offset => slot.BaseGfn + offset).ToImmutableArray();
        after = this with { DirtyBitmaps = DirtyBitmaps.SetItem(slot.Id, ImmutableSortedSet<ulong>.Empty) };
        return new VmResult.DirtyLog(gfns);
    }

    /// <summary>The slot holding <paramref name="gfn"/>, or null.</summary>
    public HostMemslot? SlotOf(ulong gfn) => SlotMemory.SlotOf(Slots, gfn);

    // ---- equality and printing: by content ----

    public bool Equals(HostMemslots? other) =>
        other is not null && Slots.SameEntries(other.Slots)
        && DirtyBitmaps.Count == other.DirtyBitmaps.Count
        && DirtyBitmaps.All(b => other.DirtyBitmaps.TryGetValue(b.Key, out var o) && b.Value.SetEquals(o));

    public override int GetHashCode() => HashCode.Combine(Slots.Count, DirtyBitmaps.Count);

    public override string ToString() =>
        Slots.Count == 0 ? "no slots" : string.Join("; ", Slots.Values.Select(s =>
            s.DirtyLogging ? $"{s} ({DirtyBitmaps[s.Id].Count} dirty)" : s.ToString()));
}
