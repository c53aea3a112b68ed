namespace MmuSpec.Impl.Tdp;

/// <summary>How an access ended.</summary>
public enum TdpAccessStatus : byte
{
    /// <summary>Translated (by an existing leaf, or by one the fault just installed or fixed).</summary>
    Mapped,

    /// <summary>No memslot backs the gfn, or a write hit a read-only slot: exit to userspace.</summary>
    MmioExit,

    /// <summary>The gpa is outside the VM's guest-physical space (or the access type is unknown).</summary>
    Rejected,

    /// <summary>A host invalidation of the gfn is in progress (or raced the fault): nothing mapped, fault again (RET_PF_RETRY).</summary>
    Retry,
}
