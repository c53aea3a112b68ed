using System.Collections.Immutable;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using ImplAccess = MmuSpec.Impl.Paging.AccessType;
using ImplControls = MmuSpec.Impl.Paging.PagingControls;
using ImplMode = MmuSpec.Impl.Paging.PagingMode;
using ImplPrivilege = MmuSpec.Impl.Paging.Privilege;

namespace MmuSpec.Harness.Nested;

/// <summary>The impl's nested EPT MMU behind the spec's operations and results: each step translated in, each outcome out.</summary>
public sealed class ImplNestedEngine : IDisposable
{
    readonly INestedEptVm vm;

    public ImplNestedEngine(NestedEptConfig config, NativePagePool pool) =>
        vm = NestedEptVm.Create(config.MaxPhyAddr, config.ExecuteOnly, pool, config.RootPolicy, config.Unsync, config.GvaTlb);

    public INestedEptVm Vm => vm;

    public VmResult Step(NestedEptOp op) => op switch
    {
        NestedEptOp.CreateSlot c => Slot(vm.CreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase)),
        NestedEptOp.DeleteSlot d => Slot(vm.DeleteSlot(d.Id)),
        NestedEptOp.L1Store s => Result(vm.L1Store(s.Gpa, s.Value, s.Size)),
        NestedEptOp.LoadEptp l => Result(vm.LoadEptp(l.Eptp.Raw)),
        NestedEptOp.Invept i => Result(vm.Invept((InveptKind)(int)i.Type, i.Eptp.Raw)),
        NestedEptOp.L2Access a => Result(vm.L2Access(a.Gpa, (ImplAccess)(int)a.Type)),
        NestedEptOp.SetL2Paging p => Result(SetL2Paging(p.Cpu)),
        NestedEptOp.L2GvaAccess a => Result(vm.L2GvaAccess(a.Access.Gva, (ImplAccess)(int)a.Access.Type, (ImplPrivilege)(int)a.Access.Privilege)),
        NestedEptOp.VmExit => Result(vm.VmExit()),
        NestedEptOp.VmEntry e => Result(vm.VmEntry(e.VpidEnabled, e.Vpid, e.EptpList is not null, e.EptpList ?? 0)),
        NestedEptOp.Invvpid i => Result(vm.Invvpid((InvvpidKind)(int)i.Type, i.Vpid, i.Gva)),
        NestedEptOp.Vmfunc f => Result(vm.Vmfunc(f.Index)),
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "not a nested EPT operation"),
    };

    VmResult Slot(SlotStatus status) => status == SlotStatus.Ok ? VmResult.Ok.Instance : new VmResult.Rejected(vm.LastRejection ?? "");

    VmResult Result(NestedOutcome o) => o.Kind switch
    {
        NestedOutcomeKind.Ok => VmResult.Ok.Instance,
        NestedOutcomeKind.Rejected => new VmResult.Rejected(vm.LastRejection ?? ""),
        NestedOutcomeKind.Translated => new NestedEptResult.Translated(o.Gpa, o.L1Gpa, o.Hpa),
        NestedOutcomeKind.EptViolation => new NestedEptResult.EptExit(new EptResult.Violation(new EptViolationQualification(o.Qualification), o.Gpa,
            (o.Qualification & (1UL << EptViolationQualification.LinearAddressValidBit)) != 0 ? o.Gla : null)),
        // The spec's misconfiguration has no qualification: the field is cleared for every exit but those SDM Vol. 3C
        // §28.2.1 lists (EPT violations among them, misconfigurations not), so a non-zero one agrees with nothing.
        NestedOutcomeKind.EptMisconfiguration when o.Qualification != 0 => throw new InvalidOperationException(
            $"an EPT misconfiguration at gpa 0x{o.Gpa:X} carries exit qualification 0x{o.Qualification:X}: the field is cleared for a misconfiguration (SDM Vol. 3C §28.2.1)"),
        NestedOutcomeKind.EptMisconfiguration => new NestedEptResult.EptExit(new EptResult.Misconfiguration((EptMisconfigurationKind)(int)o.Misconfig, o.Level, o.Gpa)),
        NestedOutcomeKind.MmioExit => new NestedEptResult.MmioExit(o.L1Gpa),
        NestedOutcomeKind.L2PageFault => new NestedEptResult.GuestFault(new WalkResult.PageFault((PageFaultErrorCode)o.ErrorCode)),
        NestedOutcomeKind.L2GeneralProtection => new NestedEptResult.GuestFault(new WalkResult.GeneralProtection(GpReason.NonCanonical)),
        NestedOutcomeKind.VmfuncExit => new NestedEptResult.VmfuncExit((uint)o.Gpa),
        _ => throw new InvalidOperationException($"unknown outcome {o.Kind}"),
    };

    NestedOutcome SetL2Paging(CpuState? cpu)
    {
        if (cpu is null) return vm.SetL2Paging(false, default, 0, new ulong[4]);
        var c = cpu.Controls;
        var controls = new ImplControls((ImplMode)(int)c.Mode, c.Cr0Wp, c.Cr4Pse, c.Cr4Smep, c.Cr4Smap, c.Cr4Pke, c.EferNxe, c.EflagsAc, c.Pkru, c.MaxPhyAddr);
        return vm.SetL2Paging(true, controls, cpu.Cr3, cpu.Pdptes.AsSpan());
    }

    /// <summary>The impl's slots in the spec's vocabulary.</summary>
    public HostMemslots Slots() => vm.Slots().Aggregate(HostMemslots.Empty, (s, i) =>
        s.Create(new HostMemslot(i.Id, i.BaseGfn, i.Pages, i.HostPfnBase, Spec.Paging.PageSize.Size4K, i.ReadOnly, i.DirtyLogging)));

    /// <summary>Every non-zero word of L1's memory by host-physical address.</summary>
    public ImmutableSortedDictionary<ulong, ulong> Host()
    {
        var words = ImmutableSortedDictionary.CreateBuilder<ulong, ulong>();
        vm.VisitHostMemory((hpa, value) => words[hpa] = value);
        return words.ToImmutable();
    }

    public ImmutableArray<string> InvariantProblems() => [.. vm.InvariantProblems()];

    public void Dispose() => vm.Dispose();
}
