using MmuSpec.Impl.Tdp;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// What a vCPU's fault returned: the single-threaded MMU's outcome (<see cref="Access"/>), or
/// <see cref="IsRetry"/>, KVM's RET_PF_RETRY: the fault lost a race (a compare-and-exchange, a frozen
/// entry, a root installed by another vCPU) and left nothing of its own half-done; the vCPU re-enters
/// the guest and faults again. Allocates nothing.
/// </summary>
public readonly struct TdpVcpuOutcome : IEquatable<TdpVcpuOutcome>
{
    private TdpVcpuOutcome(TdpAccessOutcome access, bool retry)
    {
        Access = access;
        IsRetry = retry;
    }

    /// <summary>The outcome when not <see cref="IsRetry"/> (then default).</summary>
    public TdpAccessOutcome Access { get; }

    public bool IsRetry { get; }

    public static TdpVcpuOutcome Retry => new(default, retry: true);

    public static implicit operator TdpVcpuOutcome(TdpAccessOutcome access) => new(access, retry: false);

    public bool Equals(TdpVcpuOutcome other) => IsRetry == other.IsRetry && Access == other.Access;

    public override bool Equals(object? obj) => obj is TdpVcpuOutcome other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(Access, IsRetry);

    public static bool operator ==(TdpVcpuOutcome left, TdpVcpuOutcome right) => left.Equals(right);

    public static bool operator !=(TdpVcpuOutcome left, TdpVcpuOutcome right) => !left.Equals(right);

    public override string ToString() => IsRetry ? "Retry" : Access.ToString();
}
