namespace MmuSpec.Impl.Paging;

/// <summary>Bits of the #PF error code (SDM 4.7). Only these bits are ever produced.</summary>
public static class PageFaultErrorCode
{
    /// <summary>P: 0 = not-present entry; 1 = rights, protection-key or reserved-bit violation.</summary>
    public const uint Present = 1u << 0;

    /// <summary>W/R: the access was a write.</summary>
    public const uint Write = 1u << 1;

    /// <summary>U/S: the access was a user-mode access.</summary>
    public const uint User = 1u << 2;

    /// <summary>RSVD: a reserved bit was set in a paging-structure entry.</summary>
    public const uint ReservedBit = 1u << 3;

    /// <summary>I/D: instruction fetch (reported only with SMEP, or NXE with 64-bit entries).</summary>
    public const uint InstructionFetch = 1u << 4;

    /// <summary>PK: the protection key denied the access.</summary>
    public const uint ProtectionKey = 1u << 5;
}
