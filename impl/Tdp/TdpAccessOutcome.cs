namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Result of <see cref="ITdpVm.Access"/>: 16 bytes, all integer, returned in registers without touching
/// the heap. For <see cref="TdpAccessStatus.MmioExit"/> and <see cref="TdpAccessStatus.Rejected"/>,
/// <see cref="Hpa"/>, <see cref="PageShift"/> and <see cref="Faulted"/> are zero/false (the gpa of an
/// MMIO exit is the caller's own argument).
/// </summary>
public readonly struct TdpAccessOutcome : IEquatable<TdpAccessOutcome>
{
    private readonly ulong _hpa;
    private readonly TdpAccessStatus _status;
    private readonly byte _pageShift;
    private readonly bool _faulted;

    public TdpAccessOutcome(TdpAccessStatus status, ulong hpa, byte pageShift, bool faulted)
    {
        _status = status;
        _hpa = hpa;
        _pageShift = pageShift;
        _faulted = faulted;
    }

    public TdpAccessStatus Status => _status;

    /// <summary>Host physical address of the accessed byte (Mapped only).</summary>
    public ulong Hpa => _hpa;

    /// <summary>log2 of the size of the leaf that served the access: 12, 21 or 30 (Mapped only).</summary>
    public byte PageShift => _pageShift;

    /// <summary>The access faulted: a leaf was installed, made writable, or replaced (Mapped only).</summary>
    public bool Faulted => _faulted;

    public static TdpAccessOutcome MmioExit => new(TdpAccessStatus.MmioExit, 0, 0, false);

    public static TdpAccessOutcome Rejected => new(TdpAccessStatus.Rejected, 0, 0, false);

    public static TdpAccessOutcome Retry => new(TdpAccessStatus.Retry, 0, 0, false);

    public static TdpAccessOutcome Mapped(ulong hpa, int pageShift, bool faulted) =>
        new(TdpAccessStatus.Mapped, hpa, (byte)pageShift, faulted);

    public bool Equals(TdpAccessOutcome other) =>
        _hpa == other._hpa && _status == other._status && _pageShift == other._pageShift && _faulted == other._faulted;

    public override bool Equals(object? obj) => obj is TdpAccessOutcome other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(_hpa, _status, _pageShift, _faulted);

    public static bool operator ==(TdpAccessOutcome left, TdpAccessOutcome right) => left.Equals(right);

    public static bool operator !=(TdpAccessOutcome left, TdpAccessOutcome right) => !left.Equals(right);

    public override string ToString() => _status switch
    {
        TdpAccessStatus.Mapped => $"Mapped(hpa=0x{_hpa:X}, size=2^{_pageShift}, faulted={_faulted})",
        _ => _status.ToString(),
    };
}
