using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

public abstract partial record NestedEptOp
{
    /// <summary>L2 exits to L1 (any exit L1 intercepts); the VMCS keeps L2's context for the next entry.</summary>
    public sealed record VmExit : NestedEptOp
    {
        public override string ToString() => "L2 exits to L1";
    }

    /// <summary>
    /// L1 enters L2 (VMRESUME) with the VMCS's "enable VPID" and VPID and the EPTP-list address of EPTP switching
    /// (<paramref name="EptpList"/> null: the VM-function control is off); L2's EPTP and paging state stay.
    /// </summary>
    public sealed record VmEntry(bool VpidEnabled, ushort Vpid, ulong? EptpList) : NestedEptOp
    {
        public override string ToString() =>
            $"L1 enters L2 with VPID {(VpidEnabled ? Vpid.ToString(System.Globalization.CultureInfo.InvariantCulture) : "off")}, {(EptpList is { } l ? $"EPTP list at {Bits.Hex(l)}" : "no EPTP switching")}";
    }

    /// <summary>L1 executes INVVPID of <paramref name="Type"/> with the descriptor's <paramref name="Vpid"/> and linear address <paramref name="Gva"/>.</summary>
    public sealed record Invvpid(InvvpidType Type, ushort Vpid, ulong Gva) : NestedEptOp
    {
        public override string ToString() => Type switch
        {
            InvvpidType.IndividualAddress => $"L1 INVVPID individual-address {Bits.Hex(Gva)} in VPID {Vpid}",
            InvvpidType.SingleContext => $"L1 INVVPID single-context VPID {Vpid}",
            InvvpidType.AllContexts => "L1 INVVPID all-contexts",
            _ => $"L1 INVVPID single-context retaining globals VPID {Vpid}",
        };
    }

    /// <summary>L2 executes VMFUNC leaf 0 (EPTP switching) with ECX = <paramref name="Index"/> into L1's EPTP list.</summary>
    public sealed record Vmfunc(uint Index) : NestedEptOp
    {
        public override string ToString() => $"L2 VMFUNC EPTP switch to list entry {Index}";
    }
}

public abstract partial record NestedEptResult
{
    /// <summary>VMFUNC leaf 0 did not switch: a VM exit to L1 with basic reason VMFUNC (SDM Vol. 3C §26.5.6.3).</summary>
    public sealed record VmfuncExit(uint Index) : NestedEptResult
    {
        public override string ToString() => $"VM exit to L1: VMFUNC (EPTP list entry {Index})";
    }
}

/// <summary>
/// Who runs and with which VPID (docs/nested-ept.md, "VPIDs, VM entries and exits, EPTP switching"): whether L2 runs
/// (L1's instructions need L1 to run), the VMCS's "enable VPID" and VPID of the last VM entry, and its EPTP-list address.
/// Before the first entry that names them, L2 runs with VPID 1 (what <see cref="EptTlb.Start"/> assumes).
/// </summary>
public sealed record VpidContext(bool InL2, bool VpidEnabled, ushort Vpid, ulong? EptpList)
{
    public static readonly VpidContext Initial = new(false, true, 1, null);

    /// <summary>The current VPID (SDM Vol. 3C §29.1): the VMCS's with "enable VPID", else 0000H.</summary>
    public ushort Current => VpidEnabled ? Vpid : (ushort)0;
}

public sealed partial record NestedEptState
{
    /// <summary>The EPTP list holds 512 EPTPs, one 4 KiB page (SDM Vol. 3C §26.5.6.3).</summary>
    public const uint EptpListEntries = 512;

    public VpidContext Vpid { get; init; } = VpidContext.Initial;

    (NestedEptState, VmResult) StepVpid(NestedEptOp op)
    {
        VmResult Reject(string why) => new VmResult.Rejected(why);
        switch (op)
        {
            case NestedEptOp.VmExit:
                return Vpid.InL2 ? (this with { Vpid = Vpid with { InL2 = false } }, VmResult.Ok.Instance) : (this, Reject("L2 is not running"));
            case NestedEptOp.VmEntry e:
                if (Eptp is null) return (this, Reject("no EPTP: L1 has not entered L2"));
                // §27.2.1.1: "enable VPID" with VPID 0000H fails the VM-execution-control checks.
                if (e.VpidEnabled && e.Vpid == 0) return (this, Reject("VM entry with \"enable VPID\" and VPID 0000H fails its control checks"));
                // §27.2.1.1: with EPTP switching the EPTP-list address is 4 KiB aligned and below MAXPHYADDR.
                if (e.EptpList is { } list && (list & 0xFFF) != 0 | list >> Caps.MaxPhyAddr != 0)
                    return (this, Reject($"EPTP-list address {Bits.Hex(list)} is not page-aligned below MAXPHYADDR"));
                return (this with { Vpid = new VpidContext(true, e.VpidEnabled, e.Vpid, e.EptpList) }, VmResult.Ok.Instance);
            case NestedEptOp.Invvpid i:
                // INVVPID in L2 exits to L1 unconditionally: the op is L1's, so L2 must have exited first.
                if (Vpid.InL2) return (this, Reject("INVVPID is L1's instruction and L2 is running"));
                // §31.3 (INVVPID): a descriptor VPID of 0000H fails types 0, 1 and 3 (VMfailValid). What it invalidates is EptTlb's.
                if (i.Vpid == 0 && i.Type != InvvpidType.AllContexts) return (this, Reject($"INVVPID {i.Type} with VPID 0000H fails"));
                if (!Enum.IsDefined(i.Type)) return (this, Reject($"INVVPID type {(int)i.Type} is not supported"));
                return (this, VmResult.Ok.Instance);
            case NestedEptOp.Vmfunc f:
                return Vmfunc(f.Index);
            default:
                throw new ArgumentOutOfRangeException(nameof(op), op, "not a nested EPT operation");
        }
    }

    /// <summary>
    /// VMFUNC leaf 0 (SDM Vol. 3C §26.5.6.3): with EPTP switching on and ECX below 512, the ECX'th EPTP of L1's list
    /// becomes current when it passes VM entry's EPTP checks (§25.6.11); otherwise a VM exit to L1 (reason VMFUNC), L2's
    /// EPTP unchanged. The same EPTP again is no switch. Model: an EPTP list outside L1's memory is a VM exit, as KVM's
    /// nested_vmx_eptp_switching fails when it cannot read the entry.
    /// </summary>
    (NestedEptState, VmResult) Vmfunc(uint index)
    {
        if (!Vpid.InL2 || Eptp is not { } eptp) return (this, new VmResult.Rejected("L2 is not running"));
        var exited = this with { Vpid = Vpid with { InL2 = false } };
        if (Vpid.EptpList is not { } list || index >= EptpListEntries) return (exited, new NestedEptResult.VmfuncExit(index));
        if (L1Memory.Read64(list + index * 8UL) is not { } raw) return (exited, new NestedEptResult.VmfuncExit(index));
        var next = new EptPointer(raw);
        if (next.Problem(Caps) is not null) return (exited, new NestedEptResult.VmfuncExit(index));
        return (next == eptp ? this : this with { Eptp = next }, VmResult.Ok.Instance);
    }
}
