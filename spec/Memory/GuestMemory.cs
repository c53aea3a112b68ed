using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Memory;

/// <summary>
/// A range of guest frames backed by host memory: KVM's memslot, reduced to what a walk needs. The MMU
/// models keep the whole memslot (id, host frames, flags) as a <see cref="HostMemslot"/>.
/// </summary>
public sealed record Memslot(ulong BaseGfn, ulong Pages)
{
    public const int PageShift = 12;
    public ulong EndGfn => BaseGfn + Pages;
    public bool ContainsGpa(ulong gpa) => (gpa >> PageShift) >= BaseGfn && (gpa >> PageShift) < EndGfn;
    public Memslot WithBaseGfn(ulong value) => new(value, Pages);
    public Memslot WithPages(ulong value) => new(BaseGfn, value);
    public override string ToString() => $"slot gfn [{Bits.Hex(BaseGfn)}, {Bits.Hex(EndGfn)})";
}

/// <summary>
/// A read-only guest-physical memory image that the spec can read without copying, e.g. a
/// memory-mapped RAM dump where file offset = gpa.
/// </summary>
public interface IPhysicalMemoryImage
{
    /// <summary>Size of the image in bytes; gpas at or beyond it are not backed.</summary>
    ulong Length { get; }

    /// <summary>The little-endian 8 bytes at <paramref name="gpa"/> (8-byte aligned, below Length).</summary>
    ulong ReadQword(ulong gpa);
}

/// <summary>
/// Guest-physical memory as an immutable value: the memslots that back it, an optional read-only
/// image underneath, and every 8-byte word the guest (or a walk's A/D update) has written, stored
/// only when non-zero so that two memories with the same bytes are equal maps. A gpa outside
/// every memslot is not backed: reads give <c>null</c>, writes are dropped.
/// </summary>
public sealed class GuestMemory
{
    private GuestMemory(ImmutableArray<Memslot> slots, IPhysicalMemoryImage? image, ImmutableSortedDictionary<ulong, ulong> written)
    {
        Slots = slots; Image = image; Written = written;
    }

    public ImmutableArray<Memslot> Slots { get; }
    public IPhysicalMemoryImage? Image { get; }

    /// <summary>Qword-aligned gpa to value, for every word whose value differs from the image (or from zero).</summary>
    public ImmutableSortedDictionary<ulong, ulong> Written { get; }

    /// <summary>Zero-filled memory backed by the given memslots (which must not overlap).</summary>
    public static GuestMemory FromSlots(IEnumerable<Memslot> slots)
    {
        var list = slots.OrderBy(s => s.BaseGfn).ToImmutableArray();
        for (int i = 1; i < list.Length; i++)
            if (list[i].BaseGfn < list[i - 1].EndGfn)
                throw new ArgumentException($"memslots overlap: {list[i - 1]} and {list[i]}", nameof(slots));
        return new GuestMemory(list, null, ImmutableSortedDictionary<ulong, ulong>.Empty);
    }

    /// <summary>
    /// Memory backed by the given memslots (which must not overlap) whose contents are read from
    /// <paramref name="image"/>, addressed by gpa (e.g. a view of host memory through the memslots).
    /// </summary>
    public static GuestMemory FromSlots(IEnumerable<Memslot> slots, IPhysicalMemoryImage image) =>
        new(FromSlots(slots).Slots, image, ImmutableSortedDictionary<ulong, ulong>.Empty);

    /// <summary>Memory whose contents are a read-only image, backed from gpa 0 to the image's length.</summary>
    public static GuestMemory FromImage(IPhysicalMemoryImage image)
    {
        ulong pages = image.Length >> Memslot.PageShift;
        return new GuestMemory(ImmutableArray.Create(new Memslot(0, pages)), image, ImmutableSortedDictionary<ulong, ulong>.Empty);
    }

    /// <summary>Whether all <paramref name="size"/> bytes at <paramref name="gpa"/> are in some memslot.</summary>
    public bool IsBacked(ulong gpa, int size = 8)
    {
        ulong last = gpa + (ulong)size - 1;
        if (last < gpa) return false;
        foreach (var s in Slots)
            if (s.ContainsGpa(gpa) && s.ContainsGpa(last)) return true;
        return false;
    }

    /// <summary>The 8 bytes at an 8-aligned gpa, or null when not backed.</summary>
    public ulong? Read64(ulong gpa)
    {
        RequireAligned(gpa, 8);
        if (!IsBacked(gpa, 8)) return null;
        if (Written.TryGetValue(gpa, out ulong v)) return v;
        return Image is { } img && gpa + 8 <= img.Length ? img.ReadQword(gpa) : 0;
    }

    /// <summary>The 4 bytes at a 4-aligned gpa (little-endian), or null when not backed.</summary>
    public uint? Read32(ulong gpa)
    {
        RequireAligned(gpa, 4);
        ulong? q = Read64(gpa & ~7UL);
        return q is { } v ? (uint)(v >> (int)((gpa & 4) * 8)) : null;
    }

    /// <summary>Reads an entry of the given width (4 or 8 bytes).</summary>
    public ulong? Read(ulong gpa, int size) => size == 8 ? Read64(gpa) : Read32(gpa);

    /// <summary>Memory with the 8 bytes at <paramref name="gpa"/> replaced; unchanged when not backed.</summary>
    public GuestMemory Write64(ulong gpa, ulong value)
    {
        RequireAligned(gpa, 8);
        if (!IsBacked(gpa, 8)) return this;
        ulong underneath = Image is { } img && gpa + 8 <= img.Length ? img.ReadQword(gpa) : 0;
        var written = value == underneath ? Written.Remove(gpa) : Written.SetItem(gpa, value);
        return new GuestMemory(Slots, Image, written);
    }

    /// <summary>Memory with the 4 bytes at <paramref name="gpa"/> replaced; unchanged when not backed.</summary>
    public GuestMemory Write32(ulong gpa, uint value)
    {
        RequireAligned(gpa, 4);
        ulong q = gpa & ~7UL;
        if (Read64(q) is not { } old) return this;
        int shift = (int)((gpa & 4) * 8);
        ulong merged = (old & ~(0xFFFF_FFFFUL << shift)) | ((ulong)value << shift);
        return Write64(q, merged);
    }

    /// <summary>Writes an entry of the given width (4 or 8 bytes).</summary>
    public GuestMemory Write(ulong gpa, ulong value, int size) =>
        size == 8 ? Write64(gpa, value) : size == 4 ? Write32(gpa, (uint)value)
        : throw new ArgumentOutOfRangeException(nameof(size), size, "entries are 4 or 8 bytes");

    private static void RequireAligned(ulong gpa, int size)
    {
        if ((gpa & (ulong)(size - 1)) != 0)
            throw new ArgumentException($"gpa {Bits.Hex(gpa)} is not {size}-byte aligned", nameof(gpa));
    }

    public override string ToString() =>
        $"{string.Join(", ", Slots)}; {Written.Count} non-zero words written" + (Image is null ? "" : $"; image of {Image.Length} bytes");
}
