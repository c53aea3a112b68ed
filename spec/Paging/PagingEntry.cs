namespace MmuSpec.Spec.Paging;

/// <summary>
/// One paging-structure entry, decoded. The bit positions are the same in every mode for the
/// flags below (SDM Tables 4-4 to 4-20); only the address and reserved bits differ by mode.
/// </summary>
public readonly record struct PagingEntry(ulong Raw)
{
    public const int PresentBit = 0, WritableBit = 1, UserBit = 2, AccessedBit = 5, DirtyBit = 6, PageSizeBit = 7;
    /// <summary>XD (execute-disable), bit 63 of a 64-bit entry.</summary>
    public const int XdBit = 63;
    /// <summary>Protection key: bits 62:59 of a leaf in IA-32e paging.</summary>
    public const int ProtectionKeyShift = 59;

    public const ulong Accessed = 1UL << AccessedBit;
    public const ulong Dirty = 1UL << DirtyBit;

    public bool Present => Bits.Test(Raw, PresentBit);
    public bool Writable => Bits.Test(Raw, WritableBit);
    public bool User => Bits.Test(Raw, UserBit);
    public bool IsAccessed => Bits.Test(Raw, AccessedBit);
    public bool IsDirty => Bits.Test(Raw, DirtyBit);
    public bool PageSizeFlag => Bits.Test(Raw, PageSizeBit);
    public bool Xd => Bits.Test(Raw, XdBit);
    public int ProtectionKey => (int)((Raw >> ProtectionKeyShift) & 0xF);

    /// <summary>The flags a kernel engineer looks at first, e.g. "P W U A PS".</summary>
    public string Flags(int entryBytes)
    {
        var f = new List<string>();
        if (Present) f.Add("P");
        f.Add(Writable ? "W" : "R");
        f.Add(User ? "U" : "S");
        if (IsAccessed) f.Add("A");
        if (IsDirty) f.Add("D");
        if (PageSizeFlag) f.Add("PS");
        if (entryBytes == 8 && Xd) f.Add("XD");
        if (entryBytes == 8 && ProtectionKey != 0) f.Add($"PK={ProtectionKey}");
        return string.Join(' ', f);
    }

    public override string ToString() => $"{Bits.Hex(Raw)} [{Flags(8)}]";
}
