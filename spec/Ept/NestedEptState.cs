using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>An operation on a VM whose L1 runs L2 on EPT (docs/nested-ept.md, "The nested VM"). Immutable values with no behaviour.</summary>
public abstract partial record NestedEptOp
{
    private NestedEptOp() { }

    /// <summary>The host gives L1 guest frames [BaseGfn, BaseGfn + Pages) on host frames from HostPfnBase.</summary>
    public sealed record CreateSlot(int Id, ulong BaseGfn, ulong Pages, ulong HostPfnBase) : NestedEptOp
    {
        public override string ToString() => $"create slot {Id} gfn [{Bits.Hex(BaseGfn)}, {Bits.Hex(BaseGfn + Pages)}) host pfn {Bits.Hex(HostPfnBase)}";
    }

    public sealed record DeleteSlot(int Id) : NestedEptOp
    {
        public override string ToString() => $"delete slot {Id}";
    }

    /// <summary>L1 stores 4 or 8 bytes to its own memory (an EPT entry, L2's data, anything).</summary>
    public sealed record L1Store(ulong Gpa, ulong Value, int Size) : NestedEptOp
    {
        public override string ToString() => $"L1 write{Size * 8} [{Bits.Hex(Gpa)}] = {Bits.Hex(Value)}";
    }

    /// <summary>L1 writes the VMCS's EPTP field and enters L2 (VM entry with a new EPTP; L2's context otherwise stays).</summary>
    public sealed record LoadEptp(EptPointer Eptp) : NestedEptOp
    {
        public override string ToString() => $"L1 enters L2 with {Eptp}";
    }

    /// <summary>L1 executes INVEPT of <paramref name="Type"/>; <paramref name="Eptp"/> is the descriptor's (single-context only).</summary>
    public sealed record Invept(InveptType Type, EptPointer Eptp) : NestedEptOp
    {
        public override string ToString() => Type == InveptType.SingleContext ? $"L1 INVEPT single-context {Eptp}" : "L1 INVEPT all-context";
    }

    /// <summary>L2 accesses guest-physical <paramref name="Gpa"/> (paging off in L2, or an access the processor makes by gpa).</summary>
    public sealed record L2Access(ulong Gpa, AccessType Type) : NestedEptOp
    {
        public override string ToString() => $"L2 {Type.ToString().ToLowerInvariant()} gpa {Bits.Hex(Gpa)}";
    }
}

/// <summary>What a nested operation returned: a <see cref="VmResult"/> case (ok, rejected) or one of these.</summary>
public abstract partial record NestedEptResult : VmResult
{
    private NestedEptResult() { }

    /// <summary>L2's gpa reached L1's <paramref name="L1Gpa"/>, which the memslots back at <paramref name="Hpa"/>.</summary>
    public sealed record Translated(ulong L2Gpa, ulong L1Gpa, ulong Hpa) : NestedEptResult
    {
        public override string ToString() => $"L2 gpa {Bits.Hex(L2Gpa)} -> L1 gpa {Bits.Hex(L1Gpa)} at hpa {Bits.Hex(Hpa)}";
    }

    /// <summary>The EPT walk ended in a VM exit to L1 (<see cref="EptResult.Violation"/> or <see cref="EptResult.Misconfiguration"/>).</summary>
    public sealed record EptExit(EptResult Exit) : NestedEptResult
    {
        public override string ToString() => $"VM exit to L1: {Exit}";
    }

    /// <summary>No memslot holds L1's gpa <paramref name="L1Gpa"/>: the access (L2's, through the EPT, or L1's store) exits to userspace.</summary>
    public sealed record MmioExit(ulong L1Gpa) : NestedEptResult
    {
        public override string ToString() => $"MMIO exit at L1 gpa {Bits.Hex(L1Gpa)}";
    }
}

/// <summary>
/// A VM whose L1 runs L2 on EPT, as the spec sees it: the host memslots and host memory that make L1's memory, and
/// the EPTP L2 runs with. An L2 access is <see cref="EptWalk"/> over L1's memory as it is now (its EPT A/D writes
/// land in host memory), then L1's gpa through the memslots; nothing is cached, so what the processor may still
/// use after L1 changed its EPT is <see cref="EptTlb"/>'s business (the differential's second oracle).
/// </summary>
/// <param name="Caps">What the processor offers L1 (execute-only, MAXPHYADDR, ...).</param>
/// <param name="Eptp">The EPTP of the last VM entry, or null before the first.</param>
public sealed partial record NestedEptState(EptCapabilities Caps, HostMemslots Slots, ImmutableSortedDictionary<ulong, ulong> Host, EptPointer? Eptp)
{
    /// <summary>Host frames are below 2^40, as for the other MMUs' slots.</summary>
    public const ulong HostPfnLimit = 1UL << 40;

    public static NestedEptState Create(EptCapabilities caps) => new(caps, HostMemslots.Empty, ImmutableSortedDictionary<ulong, ulong>.Empty, null);

    /// <summary>L1's guest-physical memory now: the slots and the host memory behind them.</summary>
    public GuestMemory L1Memory => SlotMemory.View(Slots.Slots, Host);

    ulong GfnLimit => 1UL << (Caps.MaxPhyAddr - Memslot.PageShift);

    /// <summary>The host-physical address behind L1's <paramref name="gpa"/>, or null outside the slots.</summary>
    public ulong? Hpa(ulong gpa) => Slots.SlotOf(gpa >> Memslot.PageShift) is { } slot ? (slot.HostPfn(gpa >> Memslot.PageShift) << Memslot.PageShift) | (gpa & 0xFFF) : null;

    public (NestedEptState State, VmResult Result) Step(NestedEptOp op)
    {
        VmResult Reject(string why) => new VmResult.Rejected(why);
        switch (op)
        {
            case NestedEptOp.CreateSlot c:
            {
                var slot = new HostMemslot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, PageSize.Size4K, ReadOnly: false, DirtyLogging: false);
                if (Slots.CreateProblem(slot, GfnLimit, HostPfnLimit, "2^40 host frames") is { } problem) return (this, Reject(problem));
                return (this with { Slots = Slots.Create(slot) }, VmResult.Ok.Instance);
            }
            case NestedEptOp.DeleteSlot d:
                // The VMM unmapped the slot's memory: a later slot on these host frames reads zero.
                return Slots[d.Id] is { } gone
                    ? (this with { Slots = Slots.Delete(gone), Host = SlotMemory.Discard(Host, gone) }, VmResult.Ok.Instance)
                    : (this, Reject(HostMemslots.NoSlot(d.Id)));
            case NestedEptOp.L1Store s:
                if (s.Size is not (4 or 8) || s.Gpa % (ulong)s.Size != 0) return (this, Reject($"a {s.Size}-byte store at {Bits.Hex(s.Gpa)} is not an aligned 4- or 8-byte store"));
                return Hpa(s.Gpa) is { } hpa
                    ? (this with { Host = SlotMemory.Store(Host, hpa, s.Value, s.Size) }, VmResult.Ok.Instance)
                    : (this, new NestedEptResult.MmioExit(s.Gpa));
            case NestedEptOp.LoadEptp l:
                // SDM Vol. 3C §25.6.11: VM entry fails on an invalid EPTP; L2 does not run.
                return l.Eptp.Problem(Caps) is { } bad ? (this, Reject(bad.Describe())) : (this with { Eptp = l.Eptp, Vpid = Vpid with { InL2 = true } }, VmResult.Ok.Instance);
            case NestedEptOp.Invept i:
                // INVEPT changes no memory; what it invalidates is EptTlb's. An invalid single-context EPTP fails it (VMfailValid).
                if (i.Type == InveptType.SingleContext && i.Eptp.Problem(Caps) is { } wrong) return (this, Reject(wrong.Describe()));
                return (this, VmResult.Ok.Instance);
            case NestedEptOp.L2Access a:
                return Access(a);
            default:
                return StepL2(op);   // L2's own paging: NestedEptState.L2.cs
        }
    }

    (NestedEptState, VmResult) Access(NestedEptOp.L2Access a)
    {
        if (Eptp is not { } eptp) return (this, new VmResult.Rejected("no EPTP: L1 has not entered L2"));
        if (a.Gpa >> Math.Min(Caps.MaxPhyAddr, EptWalk.AddressBits(eptp.WalkLength)) != 0)
            return (this, new VmResult.Rejected($"gpa {Bits.Hex(a.Gpa)} is wider than MAXPHYADDR or the EPT walk"));
        var walk = EptWalk.Explain(Caps, eptp, L1Memory, new EptAccess(a.Gpa, a.Type));
        if (walk.Result is not EptResult.Translated t) return (this, new NestedEptResult.EptExit(walk.Result));
        // §29.3.4: the walk's A/D writes land in L1's memory, which is host memory behind the slots (every entry it used was in one).
        var host = Host;
        foreach (var u in walk.Updates)
            host = SlotMemory.Store(host, Hpa(u.Gpa)!.Value, u.After, 8);
        var after = this with { Host = host };
        return after.Hpa(t.L1Gpa) is { } hpa
            ? (after, new NestedEptResult.Translated(a.Gpa, t.L1Gpa, hpa))
            : (after, new NestedEptResult.MmioExit(t.L1Gpa));
    }

    public override string ToString() => $"{Slots}; {(Eptp is { } e ? e.ToString() : "no EPTP")}; {Host.Count} non-zero host words";
}
