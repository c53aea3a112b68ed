using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Memory;

/// <summary>
/// A memslot as the TDP and shadow MMUs see it (KVM's struct kvm_memory_slot, reduced): guest frames
/// [BaseGfn, BaseGfn + Pages) backed by host frames from HostPfnBase, with host pages of
/// HostPageSize, read-only or not, logging dirty pages or not. The guest walk needs only the gfn
/// range, a <see cref="Memslot"/> (<see cref="SlotMemory.View"/> reduces one to the other).
/// </summary>
public sealed record HostMemslot(int Id, ulong BaseGfn, ulong Pages, ulong HostPfnBase, PageSize HostPageSize, bool ReadOnly, bool DirtyLogging)
{
    public ulong EndGfn => BaseGfn + Pages;
    public bool Contains(ulong gfn) => gfn >= BaseGfn && gfn < EndGfn;
    public bool Overlaps(ulong start, ulong end) => start < EndGfn && BaseGfn < end;
    public ulong HostPfn(ulong gfn) => HostPfnBase + (gfn - BaseGfn);

    public HostMemslot WithBaseGfn(ulong value) => this with { BaseGfn = value };
    public HostMemslot WithDirtyLogging(bool value) => this with { DirtyLogging = value };

    public override string ToString() =>
        $"slot {Id}: gfn [{Bits.Hex(BaseGfn)}, {Bits.Hex(EndGfn)}) -> host pfn {Bits.Hex(HostPfnBase)}, {HostPageSize.Name()} host pages"
        + (ReadOnly ? ", read-only" : "") + (DirtyLogging ? ", dirty logging" : "");
}
