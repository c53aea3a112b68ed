namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Result of <see cref="ITdpVm.PreFault"/>: 16 bytes, returned in registers. <see cref="TdpAccessStatus.Mapped"/>
/// with the bytes mapped from the start of the range (at least a page); <see cref="TdpAccessStatus.MmioExit"/>
/// when the first page is in no memslot or beyond the gpa width (KVM's -ENOENT), nothing mapped;
/// <see cref="TdpAccessStatus.Rejected"/> for a bad range (KVM's -EINVAL).
/// </summary>
public readonly struct TdpPreFaultOutcome(TdpAccessStatus status, ulong bytes) : IEquatable<TdpPreFaultOutcome>
{
    public TdpAccessStatus Status => status;

    /// <summary>Bytes from the range's start that are now mapped (Mapped only; else 0).</summary>
    public ulong Bytes => bytes;

    public bool Equals(TdpPreFaultOutcome other) => Status == other.Status && Bytes == other.Bytes;

    public override bool Equals(object? obj) => obj is TdpPreFaultOutcome other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(Status, Bytes);

    public static bool operator ==(TdpPreFaultOutcome left, TdpPreFaultOutcome right) => left.Equals(right);

    public static bool operator !=(TdpPreFaultOutcome left, TdpPreFaultOutcome right) => !left.Equals(right);

    public override string ToString() => Status == TdpAccessStatus.Mapped ? $"Populated(0x{Bytes:X} bytes)" : Status.ToString();
}
