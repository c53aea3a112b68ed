using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// Result of one access: a translation (with its rights) or a fault. 16 bytes, all integer,
/// so it comes back in two registers without touching the heap.
/// For faults every translation field (Gpa, PageShift, rights, key) is zero/false.
/// </summary>
public readonly struct WalkOutcome : IEquatable<WalkOutcome>
{
    // Flag layout deliberately equals AccessRights with Exec inverted, so a translation's
    // flags are "rights ^ Exec" (one XOR instead of three conditionals).
    private const byte NoExecuteFlag = (byte)AccessRights.Exec;
    private const byte WritableFlag = (byte)AccessRights.Write;
    private const byte UserFlag = (byte)AccessRights.User;

    private readonly ulong _gpa;
    private readonly uint _errorCode;
    private readonly WalkStatus _status;
    private readonly byte _pageShift;
    private readonly byte _flags;
    private readonly byte _protectionKey;

    private WalkOutcome(WalkStatus status, ulong gpa, byte pageShift, uint errorCode, byte flags, byte protectionKey)
    {
        _status = status;
        _gpa = gpa;
        _pageShift = pageShift;
        _errorCode = errorCode;
        _flags = flags;
        _protectionKey = protectionKey;
    }

    public WalkStatus Status => _status;

    /// <summary>Guest physical address of the access (translations only).</summary>
    public ulong Gpa => _gpa;

    /// <summary>log2 of the page size: 12, 21, 22 or 30 (translations only).</summary>
    public byte PageShift => _pageShift;

    /// <summary>#PF error code (page faults only), built from <see cref="PageFaultErrorCode"/> bits.</summary>
    public uint ErrorCode => _errorCode;

    /// <summary>User-mode address: U/S=1 at every level used.</summary>
    public bool User => (_flags & UserFlag) != 0;

    /// <summary>R/W=1 at every level used.</summary>
    public bool Writable => (_flags & WritableFlag) != 0;

    /// <summary>XD=1 at some level used (64-bit entries with EFER.NXE=1 only).</summary>
    public bool NoExecute => (_flags & NoExecuteFlag) != 0;

    /// <summary>Leaf protection key (4/5-level paging with CR4.PKE=1), else 0.</summary>
    public byte ProtectionKey => _protectionKey;

    internal static WalkOutcome GeneralProtection => new(WalkStatus.GeneralProtection, 0, 0, 0, 0, 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static WalkOutcome PageFault(uint errorCode) => new(WalkStatus.PageFault, 0, 0, errorCode, 0, 0);

    /// <param name="rights">Rights in <see cref="AccessRights"/> layout.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static WalkOutcome Translated(ulong gpa, int pageShift, uint rights, uint protectionKey) =>
        new(WalkStatus.Translated, gpa, (byte)pageShift, 0, (byte)(rights ^ AccessRights.Exec), (byte)protectionKey);

    public bool Equals(WalkOutcome other) =>
        _status == other._status && _gpa == other._gpa && _pageShift == other._pageShift &&
        _errorCode == other._errorCode && _flags == other._flags && _protectionKey == other._protectionKey;

    public override bool Equals(object? obj) => obj is WalkOutcome other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(_status, _gpa, _pageShift, _errorCode, _flags, _protectionKey);

    public static bool operator ==(WalkOutcome left, WalkOutcome right) => left.Equals(right);

    public static bool operator !=(WalkOutcome left, WalkOutcome right) => !left.Equals(right);

    public override string ToString() => _status switch
    {
        WalkStatus.Translated =>
            $"Translated(Gpa=0x{_gpa:X}, PageShift={_pageShift}, User={User}, Writable={Writable}, NoExecute={NoExecute}, Pkey={_protectionKey})",
        WalkStatus.PageFault => $"PageFault(ErrorCode=0x{_errorCode:X})",
        _ => "GeneralProtection",
    };
}
