using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>An operation on a TDP VM (docs/tdp-model.md). Immutable values with no behaviour.</summary>
public abstract record TdpOp
{
    private TdpOp() { }

    public sealed record CreateSlot(int Id, ulong BaseGfn, ulong Pages, ulong HostPfnBase, PageSize HostPageSize, bool ReadOnly) : TdpOp
    {
        public override string ToString() =>
            $"create slot {Id} gfn [{Bits.Hex(BaseGfn)}, {Bits.Hex(BaseGfn + Pages)}) host pfn {Bits.Hex(HostPfnBase)} {HostPageSize.Name()}{(ReadOnly ? " read-only" : "")}";
    }

    public sealed record DeleteSlot(int Id) : TdpOp
    {
        public override string ToString() => $"delete slot {Id}";
    }

    public sealed record MoveSlot(int Id, ulong NewBaseGfn) : TdpOp
    {
        public override string ToString() => $"move slot {Id} to gfn {Bits.Hex(NewBaseGfn)}";
    }

    public sealed record SetDirtyLogging(int Id, bool On) : TdpOp
    {
        public override string ToString() => $"dirty logging {(On ? "on" : "off")} for slot {Id}";
    }

    public sealed record GetDirtyLog(int Id) : TdpOp
    {
        public override string ToString() => $"get dirty log of slot {Id}";
    }

    /// <summary>The guest touches a guest-physical address (after its own page walk, or with paging off).</summary>
    public sealed record AccessGpa(ulong Gpa, AccessType Type) : TdpOp
    {
        public override string ToString() => $"{Type.ToString().ToLowerInvariant()} gpa {Bits.Hex(Gpa)}";
    }

    /// <summary>The host unmaps guest memory (an MMU notifier's invalidate_range).</summary>
    public sealed record ZapRange(ulong StartGfn, ulong EndGfn) : TdpOp
    {
        public override string ToString() => $"zap gfn [{Bits.Hex(StartGfn)}, {Bits.Hex(EndGfn)})";
    }

    /// <summary>
    /// KVM_PRE_FAULT_MEMORY: the VMM maps [<paramref name="Gpa"/>, +<paramref name="Size"/>) ahead of the
    /// guest, as read faults would (<see cref="TdpState"/>'s PreFault rule).
    /// </summary>
    public sealed record PreFault(ulong Gpa, ulong Size) : TdpOp
    {
        public override string ToString() => $"pre-fault gpa [{Bits.Hex(Gpa)}, +{Bits.Hex(Size)})";
    }

    /// <summary>The host ages guest memory (kvm_age_gfn): reports whether a leaf in range was young and makes them old.</summary>
    public sealed record Age(ulong StartGfn, ulong EndGfn) : TdpOp
    {
        public override string ToString() => $"age gfn [{Bits.Hex(StartGfn)}, {Bits.Hex(EndGfn)})";
    }

    /// <summary>The host asks whether guest memory is young (kvm_test_age_gfn), changing nothing.</summary>
    public sealed record TestAge(ulong StartGfn, ulong EndGfn) : TdpOp
    {
        public override string ToString() => $"test age gfn [{Bits.Hex(StartGfn)}, {Bits.Hex(EndGfn)})";
    }

    /// <summary>
    /// The host starts tracking writes to <paramref name="Gfn"/> (kvm_write_track_add_gfn, page_track.c: a guest page
    /// table KVM shadows for a nested guest): from now on no leaf maps it writable (TdpState.WriteTracking.cs).
    /// </summary>
    public sealed record TrackWrites(ulong Gfn) : TdpOp
    {
        public override string ToString() => $"track writes gfn {Bits.Hex(Gfn)}";
    }

    /// <summary>The host stops tracking writes to <paramref name="Gfn"/> (kvm_write_track_remove_gfn).</summary>
    public sealed record UntrackWrites(ulong Gfn) : TdpOp
    {
        public override string ToString() => $"untrack writes gfn {Bits.Hex(Gfn)}";
    }

    public sealed record ZapAll : TdpOp
    {
        public override string ToString() => "zap all";
    }

    public sealed record SetMaxPageSize(PageSize Size) : TdpOp
    {
        public override string ToString() => $"max page size {Size.Name()}";
    }

    /// <summary>The guest stores 4 or 8 bytes to guest-physical memory: a write access through the MMU.</summary>
    public sealed record GuestStore(ulong Gpa, ulong Value, int Size) : TdpOp
    {
        public override string ToString() => $"guest write{Size * 8} [{Bits.Hex(Gpa)}] = {Bits.Hex(Value)}";
    }

    /// <summary>The guest turns paging off (<paramref name="Controls"/> null) or loads controls and CR3.</summary>
    public sealed record GuestSetPaging(PagingControls? Controls, ulong Cr3) : TdpOp
    {
        public override string ToString() => Controls is null ? "guest paging off" : $"guest paging {Controls}, CR3={Bits.Hex(Cr3)}";
    }

    /// <summary>The guest touches a linear address: its own page walk, then the MMU for every gpa touched.</summary>
    public sealed record GuestAccess(Access Access) : TdpOp
    {
        public override string ToString() => $"guest {Access}";
    }

    /// <summary>
    /// An MMU notifier's invalidate_range_start over the gfns the host range backs: the host is about to
    /// change the pages behind [<paramref name="StartGfn"/>, <paramref name="EndGfn"/>) (TdpState.Notifier.cs).
    /// </summary>
    public sealed record HostInvalidateStart(ulong StartGfn, ulong EndGfn) : TdpOp
    {
        public override string ToString() => $"host invalidate start gfn [{Bits.Hex(StartGfn)}, {Bits.Hex(EndGfn)})";
    }

    /// <summary>invalidate_range_end of an open <see cref="HostInvalidateStart"/> over the same range: the host pages have moved.</summary>
    public sealed record HostInvalidateEnd(ulong StartGfn, ulong EndGfn) : TdpOp
    {
        public override string ToString() => $"host invalidate end gfn [{Bits.Hex(StartGfn)}, {Bits.Hex(EndGfn)})";
    }
}

/// <summary>What a TDP operation returned: a <see cref="VmResult"/> case (ok, rejected, a dirty log) or one of these.</summary>
public abstract record TdpResult : VmResult
{
    private TdpResult() { }

    /// <summary>The access reached host-physical address <paramref name="Hpa"/> through a leaf of <paramref name="Size"/>; <paramref name="Faulted"/> when the MMU had to handle a fault first.</summary>
    public sealed record Mapped(ulong Hpa, PageSize Size, bool Faulted) : TdpResult
    {
        public override string ToString() => $"{(Faulted ? "faulted in" : "hit")} hpa {Bits.Hex(Hpa)} ({Size.Name()})";
    }

    /// <summary>
    /// A pre-fault made progress: the first <paramref name="Bytes"/> of the range are mapped (KVM returns 0
    /// and advances the range's gpa and size by that much; less than the size when it stopped early).
    /// </summary>
    public sealed record Populated(ulong Bytes) : TdpResult
    {
        public override string ToString() => $"populated {Bits.Hex(Bytes)} bytes";
    }

    /// <summary>What Age and TestAge report: whether any leaf in the range was accessed (young).</summary>
    public sealed record Young(bool IsYoung) : TdpResult
    {
        public override string ToString() => IsYoung ? "young" : "old";
    }

    /// <summary>No memslot (or a write to a read-only one): the access exits to userspace for emulation.</summary>
    public sealed record MmioExit(ulong Gpa) : TdpResult
    {
        public override string ToString() => $"MMIO exit at gpa {Bits.Hex(Gpa)}";
    }

    /// <summary>
    /// The fault raced a host invalidation of its gfn and maps nothing (KVM's RET_PF_RETRY after
    /// mmu_invalidate_retry_gfn): the vCPU re-enters the guest and faults again.
    /// </summary>
    public sealed record Retry : TdpResult
    {
        public override string ToString() => "retry (host invalidation in progress)";
    }

    /// <summary>The guest's own paging raised an exception (#PF or #GP): the MMU was not asked for the final access.</summary>
    public sealed record GuestFault(WalkResult Fault) : TdpResult
    {
        public override string ToString() => $"guest {Fault}";
    }
}
