using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

public abstract partial record NestedEptOp
{
    /// <summary>
    /// L1 writes L2's paging state into the VMCS (guest CR0, CR3, CR4, EFER and, for PAE, the guest PDPTE fields) and
    /// enters L2; <paramref name="Cpu"/> null: L2 runs with paging off.
    /// </summary>
    public sealed record SetL2Paging(CpuState? Cpu) : NestedEptOp
    {
        public override string ToString() => Cpu is { } c ? $"L1 enters L2 with paging {c}" : "L1 enters L2 with paging off";
    }

    /// <summary>L2 accesses its linear address: the 2D walk through L2's tables and L1's EPT (<see cref="NestedWalk"/>).</summary>
    public sealed record L2GvaAccess(Access Access) : NestedEptOp
    {
        public override string ToString() => $"L2 {Access}";
    }
}

public abstract partial record NestedEptResult
{
    /// <summary>L2's own tables fault (#PF or #GP): an exception delivered to L2, no VM exit.</summary>
    public sealed record GuestFault(WalkResult Fault) : NestedEptResult
    {
        public override string ToString() => $"L2 {Fault}";
    }
}

/// <summary>L2's own paging (docs/nested-ept.md, "L2's gva accesses"): its CPU state and its accesses by linear address.</summary>
public sealed partial record NestedEptState
{
    /// <summary>L2's paging state from the last VM entry that set it; null: paging off (the gva is the gpa).</summary>
    public CpuState? L2Cpu { get; init; }

    (NestedEptState, VmResult) StepL2(NestedEptOp op) => op switch
    {
        NestedEptOp.SetL2Paging p => SetL2Paging(p.Cpu),
        NestedEptOp.L2GvaAccess a => GvaAccess(a.Access),
        _ => StepVpid(op),   // VPIDs, VM entry/exit, VMFUNC: NestedEptState.Vpid.cs
    };

    /// <summary>
    /// VM entry's checks on the guest's paging state (SDM Vol. 3C §27.3.1.1: CR3 bits beyond MAXPHYADDR; §27.3.1.6: with
    /// EPT, PAE's PDPTEs come from the VMCS and a present one with a reserved bit fails the entry). A failed entry leaves
    /// L2's previous state. Outside IA-32e mode CR3 is 32 bits wide.
    /// </summary>
    (NestedEptState, VmResult) SetL2Paging(CpuState? cpu)
    {
        if (cpu is null) return (this with { L2Cpu = null, Vpid = Vpid with { InL2 = true } }, VmResult.Ok.Instance);
        var c = cpu.Controls;
        if (!c.Mode.IsLongMode() && cpu.Cr3 > uint.MaxValue)
            return (this, new VmResult.Rejected($"CR3 {Bits.Hex(cpu.Cr3)} is wider than 32 bits in {c.Mode.Name()} paging"));
        if (c.Mode.IsLongMode() && (cpu.Cr3 & ReservedBits.LongModeCr3Mask(c)) != 0)
            return (this, new VmResult.Rejected($"CR3 {Bits.Hex(cpu.Cr3)} sets bits at or above MAXPHYADDR: VM entry fails"));
        if (c.Mode == PagingMode.Pae)
            for (int i = 0; i < 4; i++)
                if (new PagingEntry(cpu.Pdptes[i]).Present && (cpu.Pdptes[i] & ReservedBits.PaePdpteMask(c)) != 0)
                    return (this, new VmResult.Rejected($"the guest PDPTE{i} field sets reserved bits: VM entry fails"));
        return (this with { L2Cpu = cpu, Vpid = Vpid with { InL2 = true } }, VmResult.Ok.Instance);
    }

    /// <summary>
    /// An L2 access by linear address: <see cref="NestedWalk"/> over L1's memory as it is now; what it wrote (EPT A/D,
    /// L2's A/D) lands in host memory, also when the walk ends in an exit (the EPT walks before it keep theirs); a
    /// final L1 gpa outside the slots is an MMIO exit. Addresses the walk cannot take are caller errors, rejected.
    /// </summary>
    (NestedEptState, VmResult) GvaAccess(Access access)
    {
        if (Eptp is not { } eptp) return (this, new VmResult.Rejected("no EPTP: L1 has not entered L2"));
        int eptBits = EptWalk.AddressBits(eptp.WalkLength);
        if (L2Cpu is null && access.Gva >> Math.Min(Caps.MaxPhyAddr, eptBits) != 0)
            return (this, new VmResult.Rejected($"gva {Bits.Hex(access.Gva)} (paging off) is wider than MAXPHYADDR or the EPT walk"));
        if (L2Cpu is { } cpu)
        {
            if (!cpu.Controls.Mode.IsLongMode() && access.Gva > uint.MaxValue)
                return (this, new VmResult.Rejected($"gva {Bits.Hex(access.Gva)} is wider than 32 bits in {cpu.Controls.Mode.Name()} paging"));
            if (cpu.Controls.MaxPhyAddr > eptBits)
                return (this, new VmResult.Rejected($"L2's MAXPHYADDR {cpu.Controls.MaxPhyAddr} is wider than the {eptBits} bits the EPT translates"));
        }
        var walk = NestedWalk.Explain(Caps, eptp, L2Cpu, L1Memory, access);
        var host = Host;
        var after = walk.L1MemoryAfter;
        // Every word the walk wrote, at its final value (an EPT A/D bit and an L2 A/D bit can share a word).
        var written = walk.EptWalks.SelectMany(w => w.Walk.Updates).Concat(walk.GuestUpdates).Select(u => u.Gpa & ~7UL).Distinct();
        foreach (var gpa in written)
            host = SlotMemory.Store(host, Hpa(gpa)!.Value, after.Read64(gpa)!.Value, 8);
        var state = this with { Host = host };
        VmResult result = walk.Result switch
        {
            NestedResult.Translated t => state.Hpa(t.L1Gpa) is { } hpa ? new NestedEptResult.Translated(t.L2Gpa, t.L1Gpa, hpa) : new NestedEptResult.MmioExit(t.L1Gpa),
            NestedResult.GuestFault f => new NestedEptResult.GuestFault(f.Result),
            NestedResult.EptExit e => new NestedEptResult.EptExit(e.Exit),
            _ => throw new InvalidOperationException($"unknown 2D walk result {walk.Result}"),
        };
        return (state, result);
    }
}
