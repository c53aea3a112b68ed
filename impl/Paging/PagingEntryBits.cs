namespace MmuSpec.Impl.Paging;

/// <summary>Bits of paging-structure entries (SDM 4.3-4.5 tables).</summary>
internal static class PagingEntryBits
{
    public const ulong Present = 1UL << 0;
    public const ulong Writable = 1UL << 1;
    public const ulong User = 1UL << 2;
    public const ulong Accessed = 1UL << 5;
    public const ulong Dirty = 1UL << 6;

    /// <summary>PS in a PDE/PDPTE (PAT in a PTE).</summary>
    public const int PageSizeShift = 7;
    public const ulong PageSize = 1UL << PageSizeShift;

    /// <summary>XD, 64-bit entries only.</summary>
    public const int NoExecuteShift = 63;
    public const ulong NoExecute = 1UL << NoExecuteShift;

    /// <summary>Protection key: leaf bits 62:59 in 4/5-level paging.</summary>
    public const int ProtectionKeyShift = 59;
    public const uint ProtectionKeyMask = 0xF;

    /// <summary>PSE-36: 4 MiB PDE bits (M-20):13 hold physical bits (M-1):32.</summary>
    public const int Pse36LowBit = 13;
    public const int Pse36TargetBit = 32;
}
