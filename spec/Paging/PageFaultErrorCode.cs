namespace MmuSpec.Spec.Paging;

/// <summary>The #PF error code (SDM Vol. 3 §4.7, Figure 4-12). Only the bits this model produces.</summary>
[Flags]
public enum PageFaultErrorCode : uint
{
    None = 0,
    /// <summary>P: 0 = a not-present entry; 1 = a protection, protection-key or reserved-bit fault.</summary>
    Present = 1 << 0,
    /// <summary>W/R: the access was a write.</summary>
    Write = 1 << 1,
    /// <summary>U/S: the access was a user-mode access (implicit supervisor accesses at CPL 3 are not).</summary>
    User = 1 << 2,
    /// <summary>RSVD: a reserved bit was set in some paging-structure entry.</summary>
    ReservedBit = 1 << 3,
    /// <summary>I/D: an instruction fetch, reported only when CR4.SMEP=1 or (PAE/IA-32e paging and EFER.NXE=1).</summary>
    InstructionFetch = 1 << 4,
    /// <summary>PK: a data access to a user-mode address that PKRU disallows.</summary>
    ProtectionKey = 1 << 5,
}

public static class PageFaultErrorCodes
{
    /// <summary>Short form as in a kernel oops: e.g. "0x7 [P W U]".</summary>
    public static string Describe(this PageFaultErrorCode code)
    {
        var parts = new List<string>();
        if (code.HasFlag(PageFaultErrorCode.Present)) parts.Add("P");
        if (code.HasFlag(PageFaultErrorCode.Write)) parts.Add("W");
        if (code.HasFlag(PageFaultErrorCode.User)) parts.Add("U");
        if (code.HasFlag(PageFaultErrorCode.ReservedBit)) parts.Add("RSVD");
        if (code.HasFlag(PageFaultErrorCode.InstructionFetch)) parts.Add("I/D");
        if (code.HasFlag(PageFaultErrorCode.ProtectionKey)) parts.Add("PK");
        return $"{Bits.Hex((uint)code)} [{string.Join(' ', parts)}]";
    }
}
