namespace MmuSpec.Spec.Paging;

/// <summary>The size of the page a translation lands in.</summary>
public enum PageSize : ulong
{
    Size4K = 1UL << 12,
    Size2M = 1UL << 21,
    Size4M = 1UL << 22,
    Size1G = 1UL << 30,
}

public static class PageSizes
{
    public static ulong Bytes(this PageSize size) => (ulong)size;
    public static int Shift(this PageSize size) => System.Numerics.BitOperations.TrailingZeroCount((ulong)size);
    public static PageSize FromShift(int shift) => shift switch
    {
        12 => PageSize.Size4K,
        21 => PageSize.Size2M,
        22 => PageSize.Size4M,
        30 => PageSize.Size1G,
        _ => throw new ArgumentOutOfRangeException(nameof(shift), shift, "not an x86 page size"),
    };
    public static string Name(this PageSize size) => size switch
    {
        PageSize.Size4K => "4K",
        PageSize.Size2M => "2M",
        PageSize.Size4M => "4M",
        PageSize.Size1G => "1G",
        _ => size.ToString(),
    };
}

/// <summary>
/// The rights a complete translation carries, combined over every level used (SDM §4.6):
/// U/S and R/W are ANDed, XD is ORed (and counts only with EFER.NXE in PAE or IA-32e paging).
/// <paramref name="ProtectionKey"/> is the leaf's bits 62:59 when CR4.PKE=1 in IA-32e paging, else 0.
/// </summary>
public sealed record TranslationRights(bool User, bool Writable, bool NoExecute, int ProtectionKey)
{
    /// <summary>What an unrestricted translation would have before any level is applied.</summary>
    public static TranslationRights All { get; } = new(true, true, false, 0);

    public TranslationRights WithUser(bool value) => new(value, Writable, NoExecute, ProtectionKey);
    public TranslationRights WithWritable(bool value) => new(User, value, NoExecute, ProtectionKey);
    public TranslationRights WithNoExecute(bool value) => new(User, Writable, value, ProtectionKey);
    public TranslationRights WithProtectionKey(int value) => new(User, Writable, NoExecute, value);

    public override string ToString() =>
        $"{(User ? "U" : "S")}{(Writable ? "W" : "R")}{(NoExecute ? " NX" : " X")}{(ProtectionKey != 0 ? $" pkey={ProtectionKey}" : "")}";
}

/// <summary>Why an operation raised #GP instead of completing.</summary>
public enum GpReason
{
    /// <summary>A linear address that is not canonical in IA-32e paging (SDM §3.3.7.1): #GP, never #PF.</summary>
    NonCanonical,
    /// <summary>MOV CR3 with a bit at or above MAXPHYADDR set (SDM §4.5: CR3 bits 63:M are reserved).</summary>
    Cr3ReservedBits,
    /// <summary>PAE: a present PDPTE has a reserved bit; the load of CR3 (or the mode switch) faults (SDM §4.4.1).</summary>
    PdpteReservedBits,
    /// <summary>PAE: the PDPT is not in guest memory, so the PDPTEs cannot be loaded (KVM's load_pdptrs fails and injects #GP).</summary>
    PdptNotInMemory,
    /// <summary>INVPCID with a type above 3 (SDM Vol. 2, INVPCID).</summary>
    InvpcidType,
    /// <summary>INVPCID with descriptor bits 63:12 set, or a non-zero PCID for types 0 and 1 while CR4.PCIDE is clear.</summary>
    InvpcidPcid,
}

/// <summary>A #GP's reason in words, as text output and traces print it (the enum names are for JSON and code).</summary>
public static class GpReasons
{
    public static string Describe(this GpReason reason) => reason switch
    {
        GpReason.NonCanonical => "non-canonical linear address (SDM §3.3.7.1)",
        GpReason.Cr3ReservedBits => "CR3 sets reserved bits at or above MAXPHYADDR (SDM §4.5)",
        GpReason.PdpteReservedBits => "a present PDPTE sets reserved bits (SDM §4.4.1, Table 4-8)",
        GpReason.PdptNotInMemory => "the PDPT is outside guest memory, so the PDPTEs cannot be loaded",
        GpReason.InvpcidType => "INVPCID type above 3",
        GpReason.InvpcidPcid => "INVPCID with a bad PCID or linear address",
        _ => reason.ToString(),
    };
}

/// <summary>
/// The architectural outcome of translating one access: a translation, a #PF with its error
/// code, or a #GP. A sealed hierarchy; F# users match it with the active patterns of the F#
/// layer in spec/fsharp (MmuSpec.FSharp.Patterns).
/// </summary>
public abstract record WalkResult
{
    private WalkResult() { }

    /// <summary>The access is allowed: it reaches <paramref name="Gpa"/> in a page of <paramref name="Size"/>.</summary>
    public sealed record Translated(ulong Gpa, PageSize Size, TranslationRights Rights) : WalkResult
    {
        public override string ToString() => $"translated to gpa {Bits.Hex(Gpa)} ({Size.Name()} page, {Rights})";
    }

    /// <summary>The access raises #PF with this error code.</summary>
    public sealed record PageFault(PageFaultErrorCode ErrorCode) : WalkResult
    {
        public override string ToString() => $"#PF error code {ErrorCode.Describe()}";
    }

    /// <summary>The access raises #GP.</summary>
    public sealed record GeneralProtection(GpReason Reason) : WalkResult
    {
        public override string ToString() => $"#GP: {Reason.Describe()}";
    }

    public bool IsTranslated => this is Translated;
}
