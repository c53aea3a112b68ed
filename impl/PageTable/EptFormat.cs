using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// x86 EPT entries (SDM Vol. 3 29.3.2): bit 0 read, bit 1 write, bit 2 execute (present = any of them),
/// bits 5:3 memory type on leaves, bit 7 (PS) on 2 MiB / 1 GiB leaves, address bits 51:12.
/// Non-leaf entries grant R/W/X (KVM lets the leaf decide), leaves are write-back.
/// </summary>
public readonly struct EptFormat : IPteFormat
{
    public const ulong Read = 1UL << 0;
    public const ulong Write = 1UL << 1;
    public const ulong Execute = 1UL << 2;
    public const ulong PresentMask = Read | Write | Execute;

    /// <summary>Leaf memory type, bits 5:3.</summary>
    public const int MemoryTypeShift = 3;
    public const ulong MemoryTypeWriteBack = 6;

    /// <summary>PS: the entry at level 2 or 3 maps a page instead of pointing at a table.</summary>
    public const ulong PageSize = 1UL << 7;

    public const int AddressBits = 52;
    public const ulong AddressMask = ((1UL << AddressBits) - 1) & ~((1UL << TableGeometry.PageShift) - 1);

    private const ulong LeafBase = Read | Execute | (MemoryTypeWriteBack << MemoryTypeShift);
    private const int MaxLeafLevel = 3;

    public static int MaxRootLevel => 5;

    public static int OutputAddressBits => AddressBits;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool LeafAllowed(int level) => (uint)(level - 1) < MaxLeafLevel;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeTable(ulong tableHpa) => tableHpa | PresentMask;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeLeaf(ulong hostPfn, int level, bool writable) =>
        (hostPfn << TableGeometry.PageShift) | LeafBase | (writable ? Write : 0) | (level > 1 ? PageSize : 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPresent(ulong pte) => (pte & PresentMask) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLeaf(ulong pte, int level) => level == 1 || (pte & PageSize) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LeafPfn(ulong pte) => (pte & AddressMask) >> TableGeometry.PageShift;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TableAddress(ulong pte) => pte & AddressMask;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsWritable(ulong pte) => (pte & Write) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithWritable(ulong pte, bool writable) => writable ? pte | Write : pte & ~Write;

    /// <summary>KVM's FROZEN_SPTE on x86 (0x5a0): R, W and X clear, so not present to the hardware or to a walk.</summary>
    public static ulong FrozenEntry => 0x5A0;

    /// <summary>SDM 29.3.5: with EPTP bit 6 set the CPU sets A (bit 8) of every entry it uses.</summary>
    public const ulong Accessed = 1UL << 8;

    /// <summary>SDM 29.3.5: ... and D (bit 9) of the leaf of a write.</summary>
    public const ulong Dirty = 1UL << 9;

    public static ulong AccessedBit => Accessed;

    public static ulong DirtyBit => Dirty;

    /// <summary>KVM's EPT_SPTE_HOST_WRITABLE: bit 57, one of the high bits EPT ignores (SDM Vol. 3C 29.3.2).</summary>
    public static ulong HostWritable => 1UL << 57;

    /// <summary>KVM's EPT_SPTE_MMU_WRITABLE: bit 58.</summary>
    public static ulong MmuWritable => 1UL << 58;
}
