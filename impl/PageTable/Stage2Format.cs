using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// Arm64 stage-2 descriptors, 4 KiB granule (Arm ARM D8.3; KVM's arch/arm64/kvm/hyp/pgtable.c).
/// Bit 0 valid. Above level 1 (KVM numbering; Arm levels 0..2) bit 1 is 1 for a table, 0 for a block;
/// at level 1 (Arm level 3) a page has bits 1:0 = 0b11. Leaves: MemAttr bits 5:2 = 0b1111 (normal,
/// write-back), S2AP bit 6 read and bit 7 write, SH bits 9:8 = inner shareable, AF bit 10 set (so the
/// first access does not fault), XN bits 54:53 = 0 (executable). Output address bits 47:12: a 4 KiB
/// granule without LPA2 gives 48-bit addresses and at most 4 levels, so there is no 5-level stage-2.
/// </summary>
public readonly struct Stage2Format : IPteFormat
{
    public const ulong Valid = 1UL << 0;

    /// <summary>Above level 1: table (1) or block (0). At level 1 it must be 1 for a page.</summary>
    public const ulong TableOrPage = 1UL << 1;

    public const int MemAttrShift = 2;
    public const ulong MemAttrNormalWriteBack = 0b1111;
    public const ulong S2apRead = 1UL << 6;
    public const ulong S2apWrite = 1UL << 7;
    public const int ShareabilityShift = 8;
    public const ulong InnerShareable = 0b11;
    public const ulong AccessFlag = 1UL << 10;

    public const int AddressBits = 48;
    public const ulong AddressMask = ((1UL << AddressBits) - 1) & ~((1UL << TableGeometry.PageShift) - 1);

    private const ulong LeafBase = Valid | (MemAttrNormalWriteBack << MemAttrShift) | S2apRead |
                                   (InnerShareable << ShareabilityShift) | AccessFlag;
    private const int MaxLeafLevel = 3;

    public static int MaxRootLevel => 4;

    public static int OutputAddressBits => AddressBits;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool LeafAllowed(int level) => (uint)(level - 1) < MaxLeafLevel;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeTable(ulong tableHpa) => tableHpa | Valid | TableOrPage;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeLeaf(ulong hostPfn, int level, bool writable) =>
        (hostPfn << TableGeometry.PageShift) | LeafBase | (writable ? S2apWrite : 0) | (level == 1 ? TableOrPage : 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPresent(ulong pte) => (pte & Valid) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLeaf(ulong pte, int level) => level == 1 || (pte & TableOrPage) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LeafPfn(ulong pte) => (pte & AddressMask) >> TableGeometry.PageShift;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TableAddress(ulong pte) => pte & AddressMask;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsWritable(ulong pte) => (pte & S2apWrite) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong WithWritable(ulong pte, bool writable) => writable ? pte | S2apWrite : pte & ~S2apWrite;

    /// <summary>KVM arm64's KVM_INVALID_PTE_LOCKED (bit 10, valid clear), which stage2_try_break_pte writes
    /// while it owns an entry.</summary>
    public static ulong FrozenEntry => 1UL << 10;

    /// <summary>AF, bit 10: the same bit as <see cref="FrozenEntry"/>, which has Valid clear, so aging (valid
    /// leaves only) never takes a frozen entry for a young leaf.</summary>
    public static ulong AccessedBit => AccessFlag;

    /// <summary>KVM arm64 tracks dirty pages by write-protection, not with DBM: no dirty bit.</summary>
    public static ulong DirtyBit => 0;

    /// <summary>Bit 55, the first of the descriptor bits 58:55 Arm reserves for software (Arm ARM D8.3;
    /// KVM arm64's KVM_PTE_LEAF_ATTR_HI_SW). KVM arm64 keeps no such bit; the x86 rule is used here.</summary>
    public static ulong HostWritable => 1UL << 55;

    /// <summary>Bit 56, the second software bit.</summary>
    public static ulong MmuWritable => 1UL << 56;
}
