namespace MmuSpec.Impl.Tdp;

/// <summary>Result of an operation other than an access. A rejected operation changed nothing.</summary>
public enum TdpStatus : byte
{
    Ok,
    Rejected,
}
