using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Shadow;

/// <summary>An operation on a shadow-paging VM (docs/shadow-model.md). Immutable values with no behaviour.</summary>
public abstract record ShadowOp
{
    private ShadowOp() { }

    public sealed record CreateSlot(int Id, ulong BaseGfn, ulong Pages, ulong HostPfnBase, bool ReadOnly) : ShadowOp
    {
        public override string ToString() =>
            $"create slot {Id} gfn [{Bits.Hex(BaseGfn)}, {Bits.Hex(BaseGfn + Pages)}) host pfn {Bits.Hex(HostPfnBase)}{(ReadOnly ? " read-only" : "")}";
    }

    public sealed record DeleteSlot(int Id) : ShadowOp
    {
        public override string ToString() => $"delete slot {Id}";
    }

    public sealed record MoveSlot(int Id, ulong NewBaseGfn) : ShadowOp
    {
        public override string ToString() => $"move slot {Id} to gfn {Bits.Hex(NewBaseGfn)}";
    }

    public sealed record SetDirtyLogging(int Id, bool On) : ShadowOp
    {
        public override string ToString() => $"dirty logging {(On ? "on" : "off")} for slot {Id}";
    }

    public sealed record GetDirtyLog(int Id) : ShadowOp
    {
        public override string ToString() => $"get dirty log of slot {Id}";
    }

    /// <summary>The guest stores 4 or 8 bytes to guest-physical memory (typically a page-table entry).</summary>
    public sealed record GuestStore(ulong Gpa, ulong Value, int Size) : ShadowOp
    {
        public override string ToString() => $"guest write{Size * 8} [{Bits.Hex(Gpa)}] = {Bits.Hex(Value)}";
    }

    /// <summary>
    /// The guest changes its paging controls and loads CR3 (KVM's kvm_mmu_reset_context): every cached
    /// root is freed. <paramref name="Pcide"/> is CR4.PCIDE (4/5-level paging only).
    /// </summary>
    public sealed record GuestSetPaging(PagingControls Controls, ulong Cr3, bool Pcide = false) : ShadowOp
    {
        public override string ToString() => $"guest paging {Controls}{(Pcide ? " PCIDE" : "")}, CR3={Bits.Hex(Cr3)}";
    }

    /// <summary>
    /// MOV to CR3 under the current controls. <paramref name="Cr3"/> is the source operand: with
    /// CR4.PCIDE set, bit 63 is NOFLUSH and bits 11:0 the PCID.
    /// </summary>
    public sealed record GuestMovCr3(ulong Cr3) : ShadowOp
    {
        public const ulong NoFlush = 1UL << 63;

        /// <summary>The operand without bit 63; with CR4.PCIDE its bits 11:0 are the PCID.</summary>
        public override string ToString() => $"guest MOV CR3 {Bits.Hex(Cr3 & ~NoFlush)}{((Cr3 & NoFlush) != 0 ? " | NOFLUSH (bit 63)" : "")}";
    }

    /// <summary>INVPCID with descriptor (<paramref name="Pcid"/>, <paramref name="Gva"/>); <paramref name="Type"/> is the register operand (0..3 valid).</summary>
    public sealed record Invpcid(ulong Type, ulong Pcid, ulong Gva) : ShadowOp
    {
        public const ulong IndividualAddress = 0, SingleContext = 1, AllContexts = 2, AllNonGlobal = 3;

        public override string ToString() => Type switch
        {
            IndividualAddress => $"invpcid address {Bits.Hex(Gva)} in pcid {Pcid}",
            SingleContext => $"invpcid single context pcid {Pcid}",
            AllContexts => "invpcid all contexts",
            AllNonGlobal => "invpcid all contexts except globals",
            _ => $"invpcid type {Type} (pcid {Pcid}, gva {Bits.Hex(Gva)})",
        };
    }

    /// <summary>The guest touches a linear address.</summary>
    public sealed record GuestAccess(Access Access) : ShadowOp
    {
        public override string ToString() => $"guest {Access}";
    }

    /// <summary>The guest invalidates the TLB entries for one linear address.</summary>
    public sealed record Invlpg(ulong Gva) : ShadowOp
    {
        public override string ToString() => $"invlpg {Bits.Hex(Gva)}";
    }

    /// <summary>The guest flushes its whole TLB, every PCID (e.g. a CR4.PGE toggle).</summary>
    public sealed record FlushTlb : ShadowOp
    {
        public override string ToString() => "flush TLB";
    }

    /// <summary>The host unmaps guest frames [StartGfn, EndGfn) (an MMU notifier's invalidate_range).</summary>
    public sealed record ZapRange(ulong StartGfn, ulong EndGfn) : ShadowOp
    {
        public override string ToString() => $"zap gfn [{Bits.Hex(StartGfn)}, {Bits.Hex(EndGfn)})";
    }

    public sealed record ZapAll : ShadowOp
    {
        public override string ToString() => "zap all";
    }
}

/// <summary>What a shadow-VM operation returned: a <see cref="VmResult"/> case (ok, rejected, a dirty log) or one of these.</summary>
public abstract record ShadowResult : VmResult
{
    private ShadowResult() { }

    /// <summary>A guest access reached <paramref name="Gpa"/> at <paramref name="Hpa"/>; <paramref name="Faulted"/> when the MMU had to walk the guest's tables (false: a shadow hit).</summary>
    public sealed record Translated(ulong Gpa, ulong Hpa, bool Faulted) : ShadowResult
    {
        public override string ToString() => $"{(Faulted ? "faulted in" : "hit")} gpa {Bits.Hex(Gpa)} at hpa {Bits.Hex(Hpa)}";
    }

    /// <summary>No memslot (or a write to a read-only one): the access exits to userspace for emulation.</summary>
    public sealed record MmioExit(ulong Gpa) : ShadowResult
    {
        public override string ToString() => $"MMIO exit at gpa {Bits.Hex(Gpa)}";
    }

    /// <summary>The guest's paging raised an exception (#PF with its error code, or #GP), injected into the guest.</summary>
    public sealed record GuestFault(WalkResult Fault) : ShadowResult
    {
        public override string ToString() => $"guest {Fault}";
    }
}
