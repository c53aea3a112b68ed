using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Memory;

/// <summary>
/// Guest memory as the host provides it, shared by the TDP and shadow models: memslots map guest
/// frames onto host frames, and host memory (every non-zero 8-byte word by host-physical address)
/// holds the bytes.
/// </summary>
public static class SlotMemory
{
    /// <summary>Whether host-physical address <paramref name="hpa"/> lies in <paramref name="slot"/>'s host frames.</summary>
    public static bool HostSlotOf(HostMemslot slot, ulong hpa) =>
        (hpa >> 12) >= slot.HostPfnBase && (hpa >> 12) - slot.HostPfnBase < slot.Pages;

    /// <summary>The slot holding <paramref name="gfn"/>, or null.</summary>
    public static HostMemslot? SlotOf(ImmutableSortedDictionary<int, HostMemslot> slots, ulong gfn)
    {
        // A loop, not Values.FirstOrDefault: every guest read of the TDP and shadow models comes here.
        foreach (var (_, slot) in slots)
            if (slot.Contains(gfn)) return slot;
        return null;
    }

    /// <summary>
    /// Guest-physical memory as the guest sees it now: the memslots, and in them the host memory
    /// that backs them (what KVM's software walker reads through memslots).
    /// </summary>
    public static GuestMemory View(ImmutableSortedDictionary<int, HostMemslot> slots, ImmutableSortedDictionary<ulong, ulong> host) =>
        GuestMemory.FromSlots(slots.Values.Select(s => new Memslot(s.BaseGfn, s.Pages)), new ThroughSlots(slots, host));

    /// <summary>Guest-physical reads resolved at the moment of reading: slot, then host frame, then host word.</summary>
    sealed class ThroughSlots(ImmutableSortedDictionary<int, HostMemslot> slots, ImmutableSortedDictionary<ulong, ulong> host) : IPhysicalMemoryImage
    {
        // Both maps are immutable, so the slots (in id order, as SlotOf finds them) and the length are
        // taken once: a walk reads several entries, and a shadow TLB check walks several memories.
        readonly HostMemslot[] _slots = [.. slots.Values];

        public ulong Length { get; } = slots.Values.Select(s => s.EndGfn << 12).DefaultIfEmpty(0UL).Max();

        public ulong ReadQword(ulong gpa)
        {
            ulong gfn = gpa >> 12;
            foreach (var slot in _slots)
                if (slot.Contains(gfn)) return host.GetValueOrDefault((slot.HostPfn(gfn) << 12) | (gpa & 0xFFF));
            return 0;
        }
    }

    /// <summary>Host memory with <paramref name="size"/> (4 or 8) bytes of <paramref name="value"/> stored at <paramref name="hpa"/>.</summary>
    public static ImmutableSortedDictionary<ulong, ulong> Store(ImmutableSortedDictionary<ulong, ulong> host, ulong hpa, ulong value, int size)
    {
        ulong word = hpa & ~7UL;
        ulong old = host.GetValueOrDefault(word);
        int shift = (int)(hpa & 7) * 8;
        ulong mask = size == 8 ? ulong.MaxValue : 0xFFFF_FFFFUL << shift;
        ulong merged = (old & ~mask) | ((value << shift) & mask);
        return merged == 0 ? host.Remove(word) : host.SetItem(word, merged);
    }

    /// <summary>Host memory without the words of <paramref name="slot"/>'s host frames (the VMM unmapped them).</summary>
    public static ImmutableSortedDictionary<ulong, ulong> Discard(ImmutableSortedDictionary<ulong, ulong> host, HostMemslot slot) =>
        host.RemoveRange(host.Keys.Where(hpa => HostSlotOf(slot, hpa)));

    /// <summary>Why gfns [baseGfn, baseGfn + pages) cannot be a memslot below <paramref name="limit"/>, or null.</summary>
    public static string? RangeProblem(ImmutableSortedDictionary<int, HostMemslot> slots, ulong baseGfn, ulong pages, ulong limit, int? ignoreId)
    {
        if (pages == 0) return "a memslot has at least one page";
        if (baseGfn >= limit || pages > limit - baseGfn)
            return $"gfn range [{Bits.Hex(baseGfn)}, {Bits.Hex(baseGfn + pages)}) goes beyond gfn {Bits.Hex(limit)}";
        foreach (var other in slots.Values)
            if (other.Id != ignoreId && other.Overlaps(baseGfn, baseGfn + pages))
                return $"gfn range [{Bits.Hex(baseGfn)}, {Bits.Hex(baseGfn + pages)}) overlaps slot {other.Id}";
        return null;
    }

    /// <summary>Why host frames [hostPfnBase, hostPfnBase + pages) cannot back a new slot, or null.</summary>
    public static string? HostRangeProblem(ImmutableSortedDictionary<int, HostMemslot> slots, ulong hostPfnBase, ulong pages, ulong hostPfnLimit, string limitReason)
    {
        if (hostPfnBase >= hostPfnLimit || pages > hostPfnLimit - hostPfnBase)
            return $"host frames beyond {Bits.Hex(hostPfnLimit)}, more than {limitReason} can hold";
        if (slots.Values.FirstOrDefault(o => hostPfnBase < o.HostPfnBase + o.Pages && o.HostPfnBase < hostPfnBase + pages) is { } sharer)
            return $"host frames [{Bits.Hex(hostPfnBase)}, {Bits.Hex(hostPfnBase + pages)}) already back slot {sharer.Id}";
        return null;
    }
}
