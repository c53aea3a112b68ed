using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Result of a guest operation. <see cref="Access"/> is meaningful for <see cref="TdpGuestStatus.Mapped"/>
/// and <see cref="TdpGuestStatus.MmioExit"/> (and is <see cref="TdpAccessOutcome.Rejected"/> for a rejected
/// access); <see cref="Fault"/> for <see cref="TdpGuestStatus.GuestFault"/> (the walk's #PF with its error
/// code, or #GP). An MMIO exit has no host address: its <see cref="Access"/> carries the exiting gpa in
/// <see cref="TdpAccessOutcome.Hpa"/>, the same value as <see cref="Gpa"/>.
/// </summary>
public readonly struct TdpGuestOutcome : IEquatable<TdpGuestOutcome>
{
    private TdpGuestOutcome(TdpGuestStatus status, TdpAccessOutcome access, WalkOutcome fault, ulong gpa)
    {
        Status = status;
        Access = access;
        Fault = fault;
        Gpa = gpa;
    }

    public TdpGuestStatus Status { get; }

    /// <summary>The final guest-physical access's outcome (Mapped, MmioExit).</summary>
    public TdpAccessOutcome Access { get; }

    /// <summary>The guest walk's fault (GuestFault): <see cref="WalkStatus.PageFault"/> or <see cref="WalkStatus.GeneralProtection"/>.</summary>
    public WalkOutcome Fault { get; }

    /// <summary>The guest-physical address the access reached (Mapped, MmioExit): the translation, or the gva with paging off.</summary>
    public ulong Gpa { get; }

    public static TdpGuestOutcome Ok => new(TdpGuestStatus.Ok, default, default, 0);

    public static TdpGuestOutcome Rejected => new(TdpGuestStatus.Rejected, TdpAccessOutcome.Rejected, default, 0);

    public static TdpGuestOutcome GuestFault(WalkOutcome fault) => new(TdpGuestStatus.GuestFault, default, fault, 0);

    /// <summary>The outcome of the final access to <paramref name="gpa"/>.</summary>
    public static TdpGuestOutcome FromAccess(TdpAccessOutcome access, ulong gpa) => access.Status switch
    {
        TdpAccessStatus.Mapped => new(TdpGuestStatus.Mapped, access, default, gpa),
        TdpAccessStatus.MmioExit => new(TdpGuestStatus.MmioExit, new TdpAccessOutcome(TdpAccessStatus.MmioExit, gpa, 0, false), default, gpa),
        TdpAccessStatus.Retry => new(TdpGuestStatus.Retry, access, default, gpa),
        _ => Rejected,
    };

    public bool Equals(TdpGuestOutcome other) =>
        Status == other.Status && Access == other.Access && Fault == other.Fault && Gpa == other.Gpa;

    public override bool Equals(object? obj) => obj is TdpGuestOutcome other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(Status, Access, Fault, Gpa);

    public static bool operator ==(TdpGuestOutcome left, TdpGuestOutcome right) => left.Equals(right);

    public static bool operator !=(TdpGuestOutcome left, TdpGuestOutcome right) => !left.Equals(right);

    public override string ToString() => Status switch
    {
        TdpGuestStatus.Mapped => $"Mapped(gpa=0x{Gpa:X}, {Access})",
        TdpGuestStatus.MmioExit => $"MmioExit(gpa=0x{Gpa:X})",
        TdpGuestStatus.GuestFault => $"GuestFault({Fault})",
        _ => Status.ToString(),
    };
}
