namespace MmuSpec.Impl.Tdp;

/// <summary>How a guest operation (<see cref="ITdpVm.GuestSetPaging"/>, <see cref="ITdpVm.GuestAccess"/>) ended.</summary>
public enum TdpGuestStatus : byte
{
    /// <summary>The paging state was set (GuestSetPaging).</summary>
    Ok,

    /// <summary>Invalid input; nothing changed (<see cref="ITdpVm.LastRejection"/> says why).</summary>
    Rejected,

    /// <summary>The access reached guest-physical memory that the MMU mapped (<see cref="TdpGuestOutcome.Access"/>).</summary>
    Mapped,

    /// <summary>The gpa the access reached is in no memslot, or it wrote to a read-only slot: exit to userspace.</summary>
    MmioExit,

    /// <summary>The guest's own paging raised #PF or #GP (<see cref="TdpGuestOutcome.Fault"/>).</summary>
    GuestFault,

    /// <summary>The final access met a host invalidation of its gfn (<see cref="TdpAccessStatus.Retry"/>): nothing mapped, fault again.</summary>
    Retry,
}
