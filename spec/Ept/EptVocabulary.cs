using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>
/// What the processor offers L1 for EPT (the bits of IA32_VMX_EPT_VPID_CAP the walk depends on, SDM Vol. 3D
/// Appendix A.10), plus the "mode-based execute control for EPT" VM-execution control, which changes how
/// entries are read. <paramref name="MaxPhyAddr"/> is the physical-address width N: entry bits 51:N are reserved.
/// </summary>
public sealed record EptCapabilities(
    bool ExecuteOnly = true,
    bool ModeBasedExecuteControl = false,
    bool FiveLevel = true,
    bool AccessedDirty = true,
    bool Pages2M = true,
    bool Pages1G = true,
    int MaxPhyAddr = 46)
{
    /// <summary>N, between 36 and 52 as for the guest's MAXPHYADDR (<see cref="PagingControls.MinMaxPhyAddr"/>).</summary>
    public int MaxPhyAddr { get; init => field = CheckWidth(value); } = CheckWidth(MaxPhyAddr);

    static int CheckWidth(int width) => width is >= PagingControls.MinMaxPhyAddr and <= PagingControls.MaxMaxPhyAddr ? width
        : throw new ArgumentOutOfRangeException(nameof(MaxPhyAddr), width, $"MAXPHYADDR is {PagingControls.MinMaxPhyAddr} to {PagingControls.MaxMaxPhyAddr}");

    public static EptCapabilities Default { get; } = new();

    public EptCapabilities WithExecuteOnly(bool value) => this with { ExecuteOnly = value };
    public EptCapabilities WithModeBasedExecuteControl(bool value) => this with { ModeBasedExecuteControl = value };
    public EptCapabilities WithFiveLevel(bool value) => this with { FiveLevel = value };
    public EptCapabilities WithAccessedDirty(bool value) => this with { AccessedDirty = value };
    public EptCapabilities WithPages2M(bool value) => this with { Pages2M = value };
    public EptCapabilities WithPages1G(bool value) => this with { Pages1G = value };
    public EptCapabilities WithMaxPhyAddr(int value) => this with { MaxPhyAddr = value };

    public override string ToString() =>
        $"EPT caps: MAXPHYADDR {MaxPhyAddr}{(ExecuteOnly ? ", execute-only" : "")}{(ModeBasedExecuteControl ? ", MBEC on" : "")}"
        + $"{(FiveLevel ? ", 5-level" : "")}{(AccessedDirty ? ", A/D" : "")}{(Pages2M ? ", 2M" : "")}{(Pages1G ? ", 1G" : "")}";
}

/// <summary>The EPT memory types (SDM Vol. 3C, "EPT and memory typing"); 2, 3 and 7 are reserved.</summary>
public enum EptMemoryType
{
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

/// <summary>Why an EPTP value cannot be used (SDM Vol. 3C §25.6.11 "Extended-Page-Table Pointer (EPTP)"; KVM's nested EPTP check).</summary>
public enum EptPointerProblem
{
    /// <summary>Bits 2:0 are neither 0 (UC) nor 6 (WB), the only paging-structure memory types EPT offers.</summary>
    MemoryType,
    /// <summary>Bits 5:3 (walk length minus one) are neither 3 nor 4, or 4 without 5-level EPT.</summary>
    WalkLength,
    /// <summary>Bit 6 enables EPT A/D flags, which the processor does not support.</summary>
    AccessedDirtyUnsupported,
    /// <summary>Bits 11:7 are reserved (bit 7, supervisor shadow-stack control, is not modelled).</summary>
    ReservedBits,
    /// <summary>Address bits at or above MAXPHYADDR are set.</summary>
    AddressBeyondMaxPhyAddr,
}

public static class EptPointerProblems
{
    public static string Describe(this EptPointerProblem problem) => problem switch
    {
        EptPointerProblem.MemoryType => "the paging-structure memory type (bits 2:0) is neither UC (0) nor WB (6)",
        EptPointerProblem.WalkLength => "the page-walk length (bits 5:3, minus one) is not 3 (4-level), or 4 (5-level) where supported",
        EptPointerProblem.AccessedDirtyUnsupported => "bit 6 enables EPT accessed/dirty flags, which are not supported",
        EptPointerProblem.ReservedBits => "reserved bits 11:7 are set",
        EptPointerProblem.AddressBeyondMaxPhyAddr => "the PML4/PML5 address sets bits at or above MAXPHYADDR",
        _ => problem.ToString(),
    };
}

/// <summary>
/// The extended-page-table pointer (SDM Vol. 3C §25.6.11): bits 2:0 the memory type used for the EPT
/// paging structures, bits 5:3 the page-walk length minus one, bit 6 enables accessed/dirty flags,
/// bits N-1:12 the address of the EPT PML4 (PML5 with a 5-level walk).
/// </summary>
public readonly record struct EptPointer(ulong Raw)
{
    public const int AccessedDirtyBit = 6;

    public int MemoryTypeBits => (int)(Raw & 7);
    /// <summary>The number of levels walked: bits 5:3 plus one.</summary>
    public int WalkLength => (int)((Raw >> 3) & 7) + 1;
    public bool AccessedDirtyEnabled => Bits.Test(Raw, AccessedDirtyBit);
    public ulong RootAddress => Raw & Bits.Range(51, 12);

    /// <summary>An EPTP with write-back paging structures, the given walk length, A/D flag and root.</summary>
    public static EptPointer Create(ulong root, int levels = 4, bool accessedDirty = false) =>
        new(root | (ulong)EptMemoryType.WriteBack | ((ulong)(levels - 1) << 3) | (accessedDirty ? 1UL << AccessedDirtyBit : 0));

    /// <summary>Why this EPTP is invalid on a processor with <paramref name="caps"/>, or null when it is valid. The checks run in the order of the EPTP's fields.</summary>
    public EptPointerProblem? Problem(EptCapabilities caps)
    {
        if (MemoryTypeBits is not ((int)EptMemoryType.Uncacheable or (int)EptMemoryType.WriteBack)) return EptPointerProblem.MemoryType;
        if (!(WalkLength == 4 || (WalkLength == 5 && caps.FiveLevel))) return EptPointerProblem.WalkLength;
        if (AccessedDirtyEnabled && !caps.AccessedDirty) return EptPointerProblem.AccessedDirtyUnsupported;
        if ((Raw & Bits.Range(11, 7)) != 0) return EptPointerProblem.ReservedBits;
        if ((Raw & Bits.Range(63, caps.MaxPhyAddr)) != 0) return EptPointerProblem.AddressBeyondMaxPhyAddr;
        return null;
    }

    public override string ToString() =>
        $"EPTP {Bits.Hex(Raw)} ({WalkLength}-level, root {Bits.Hex(RootAddress)}{(AccessedDirtyEnabled ? ", A/D" : "")})";
}

/// <summary>
/// One EPT paging-structure entry, decoded (SDM Vol. 3C §29.3.2, the EPT entry format tables). The
/// meaning of a bit can depend on the level and on bit 7; the walk (<see cref="EptWalk"/>) decides that.
/// </summary>
public readonly record struct EptEntry(ulong Raw)
{
    public const int ReadBit = 0, WriteBit = 1, ExecuteBit = 2, IgnorePatBit = 6, LargePageBit = 7,
        AccessedBit = 8, DirtyBit = 9, UserExecuteBit = 10;
    public const ulong Accessed = 1UL << AccessedBit;
    public const ulong Dirty = 1UL << DirtyBit;

    public bool Read => Bits.Test(Raw, ReadBit);
    public bool Write => Bits.Test(Raw, WriteBit);
    /// <summary>Bit 2: execute, or supervisor-mode execute when mode-based execute control is on.</summary>
    public bool Execute => Bits.Test(Raw, ExecuteBit);
    /// <summary>Bit 10: user-mode execute, meaningful only with mode-based execute control.</summary>
    public bool UserExecute => Bits.Test(Raw, UserExecuteBit);
    /// <summary>Bits 5:3 of a leaf: the EPT memory type.</summary>
    public int MemoryTypeBits => (int)((Raw >> 3) & 7);
    /// <summary>Bit 6 of a leaf: ignore the guest's PAT memory type.</summary>
    public bool IgnorePat => Bits.Test(Raw, IgnorePatBit);
    public bool LargePage => Bits.Test(Raw, LargePageBit);
    public bool IsAccessed => Bits.Test(Raw, AccessedBit);
    public bool IsDirty => Bits.Test(Raw, DirtyBit);

    /// <summary>Bits 2:0, the R/W/X triple the misconfiguration rules name (010b, 110b, 100b).</summary>
    public int Rwx => (int)(Raw & 7);

    /// <summary>
    /// §29.3.2: an entry is present when any of bits 2:0 is set; with mode-based execute control, bit 10
    /// counts too. A not-present entry's other bits are ignored.
    /// </summary>
    public bool IsPresent(EptCapabilities caps) => Rwx != 0 || (caps.ModeBasedExecuteControl && UserExecute);

    public string Flags()
    {
        var f = new List<string> { Read ? "R" : "-", Write ? "W" : "-", Execute ? "X" : "-" };
        if (UserExecute) f.Add("XU");
        if (LargePage) f.Add("PS");
        if (IsAccessed) f.Add("A");
        if (IsDirty) f.Add("D");
        return string.Join(' ', f);
    }

    public override string ToString() => $"{Bits.Hex(Raw)} [{Flags()}]";
}

/// <summary>
/// What the EPT entries used so far allow: each bit is the AND of that bit over the entries (SDM Vol. 3C
/// §29.3.3.2; the same ANDs are bits 3 to 6 of an EPT violation's exit qualification).
/// </summary>
public sealed record EptRights(bool Read, bool Write, bool Execute, bool UserExecute)
{
    /// <summary>Before any entry is applied.</summary>
    public static EptRights All { get; } = new(true, true, true, true);

    public EptRights And(EptEntry e) => new(Read && e.Read, Write && e.Write, Execute && e.Execute, UserExecute && e.UserExecute);

    public override string ToString() => $"{(Read ? "R" : "-")}{(Write ? "W" : "-")}{(Execute ? "X" : "-")}{(UserExecute ? " XU" : "")}";
}

/// <summary>
/// One access by L1's guest (L2) to a guest-physical address, as the EPT walk sees it.
/// <paramref name="UserModeLinear"/>: the access is to a user-mode linear address (U/S=1 at every level of
/// the guest's translation); only an instruction fetch with mode-based execute control looks at it.
/// <paramref name="PagingStructure"/>: the processor is reading (<see cref="AccessType.Read"/>) or updating
/// A/D bits in (<see cref="AccessType.Write"/>) one of the guest's own paging-structure entries, rather than
/// accessing the translation of a linear address.
/// <paramref name="LinearAddress"/>: the guest linear address behind the access, or null when there is none
/// (e.g. the PDPTE loads of MOV CR3 in PAE paging), which clears exit-qualification bit 7.
/// </summary>
public sealed record EptAccess(ulong Gpa, AccessType Type, bool UserModeLinear = false, bool PagingStructure = false, ulong? LinearAddress = null)
{
    public EptAccess WithGpa(ulong value) => this with { Gpa = value };
    public EptAccess WithType(AccessType value) => this with { Type = value };

    public static EptAccess Read(ulong gpa, ulong? linearAddress = null) => new(gpa, AccessType.Read, LinearAddress: linearAddress);
    public static EptAccess Write(ulong gpa, ulong? linearAddress = null) => new(gpa, AccessType.Write, LinearAddress: linearAddress);
    public static EptAccess Fetch(ulong gpa, bool userModeLinear = false, ulong? linearAddress = null) =>
        new(gpa, AccessType.Fetch, userModeLinear, LinearAddress: linearAddress);

    public override string ToString() =>
        $"{(PagingStructure ? (Type == AccessType.Write ? "guest paging-structure A/D update" : "guest paging-structure read") : Type.ToString().ToLowerInvariant())}"
        + $" gpa {Bits.Hex(Gpa)}{(UserModeLinear ? " (user-mode linear address)" : "")}{(LinearAddress is { } la ? $" for gva {Bits.Hex(la)}" : "")}";
}
