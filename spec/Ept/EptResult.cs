using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>
/// The exit qualification of an EPT violation (SDM Vol. 3C, table "Exit Qualification for EPT Violations"),
/// the bits the model computes: 0 data read, 1 data write, 2 instruction fetch; 3, 4, 5 the AND of bits 0,
/// 1, 2 of the EPT entries used; 6 the AND of bit 10 with mode-based execute control (else 0); 7 the guest
/// linear-address field is valid; 8 (only with bit 7) the access was to the translation of a linear
/// address rather than to a guest paging-structure entry. Bits 9 and up (advanced VM-exit information,
/// NMI unblocking, shadow stacks) are left 0.
/// </summary>
public readonly record struct EptViolationQualification(ulong Raw)
{
    public const int DataReadBit = 0, DataWriteBit = 1, InstructionFetchBit = 2, ReadableBit = 3, WritableBit = 4,
        ExecutableBit = 5, UserExecutableBit = 6, LinearAddressValidBit = 7, TranslatedAccessBit = 8;

    public bool DataRead => Bits.Test(Raw, DataReadBit);
    public bool DataWrite => Bits.Test(Raw, DataWriteBit);
    public bool InstructionFetch => Bits.Test(Raw, InstructionFetchBit);
    public bool Readable => Bits.Test(Raw, ReadableBit);
    public bool Writable => Bits.Test(Raw, WritableBit);
    public bool Executable => Bits.Test(Raw, ExecutableBit);
    public bool UserExecutable => Bits.Test(Raw, UserExecutableBit);
    public bool LinearAddressValid => Bits.Test(Raw, LinearAddressValidBit);
    public bool TranslatedAccess => Bits.Test(Raw, TranslatedAccessBit);

    public string Describe()
    {
        var f = new List<string>();
        if (DataRead) f.Add("read");
        if (DataWrite) f.Add("write");
        if (InstructionFetch) f.Add("fetch");
        f.Add($"perms {(Readable ? "R" : "-")}{(Writable ? "W" : "-")}{(Executable ? "X" : "-")}{(UserExecutable ? " XU" : "")}");
        if (LinearAddressValid) f.Add(TranslatedAccess ? "gla valid, final access" : "gla valid, paging-structure access");
        return $"{Bits.Hex(Raw)} ({string.Join(", ", f)})";
    }

    public override string ToString() => Describe();
}

/// <summary>Which rule of SDM Vol. 3C §29.3.3.1 (EPT misconfigurations) an entry broke.</summary>
public enum EptMisconfigurationKind
{
    /// <summary>Bits 2:0 are 010b or 110b: writes allowed, reads not.</summary>
    WriteWithoutRead,
    /// <summary>An execute-only entry (bits 2:0 100b, or 000b with bit 10 under mode-based execute control) where execute-only is not supported.</summary>
    ExecuteOnlyUnsupported,
    /// <summary>A present entry sets a reserved bit (incl. bits 51:N, and bit 7 where that page size is not supported).</summary>
    ReservedBits,
    /// <summary>The leaf's memory type (bits 5:3) is 2, 3 or 7.</summary>
    MemoryType,
}

/// <summary>
/// What an EPT walk ends in: the L1-physical address, an EPT violation, or an EPT misconfiguration.
/// A sealed hierarchy; F# matches it with <c>EptTranslated | EptViolation | EptMisconfiguration</c>.
/// </summary>
public abstract record EptResult
{
    private EptResult() { }

    /// <summary>
    /// The access is allowed and lands at <paramref name="L1Gpa"/>, an address in L1's guest-physical space,
    /// in a page of <paramref name="Size"/>. <paramref name="MemoryType"/> and <paramref name="IgnorePat"/> are the
    /// leaf's; combining them with the guest's PAT is not modelled.
    /// </summary>
    public sealed record Translated(ulong L1Gpa, PageSize Size, EptRights Rights, EptMemoryType MemoryType, bool IgnorePat) : EptResult
    {
        public override string ToString() =>
            $"translated to L1 gpa {Bits.Hex(L1Gpa)} ({Size.Name()} page, {Rights}, {MemoryType}{(IgnorePat ? ", ignore PAT" : "")})";
    }

    /// <summary>An EPT violation VM exit: its exit qualification, the guest-physical address and, when bit 7 is set, the guest linear address.</summary>
    public sealed record Violation(EptViolationQualification Qualification, ulong Gpa, ulong? LinearAddress) : EptResult
    {
        public override string ToString() =>
            $"EPT violation at gpa {Bits.Hex(Gpa)}{(LinearAddress is { } la ? $" (gva {Bits.Hex(la)})" : "")}, exit qualification {Qualification}";
    }

    /// <summary>An EPT misconfiguration VM exit (its exit qualification is not defined: zero), from the entry at <paramref name="Level"/>.</summary>
    public sealed record Misconfiguration(EptMisconfigurationKind Kind, int Level, ulong Gpa) : EptResult
    {
        public override string ToString() => $"EPT misconfiguration at gpa {Bits.Hex(Gpa)}: {Kind} in the level-{Level} entry";
    }

    public bool IsTranslated => this is Translated;
}
