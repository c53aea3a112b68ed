/// The EPT walk and the 2D walk from F# (spec/Ept, docs/nested-ept.md): total patterns over their
/// results, options where the C# API returns null, curried steps with the memory last.
module MmuSpec.FSharp.Ept

open MmuSpec.Spec.Memory
open MmuSpec.Spec.Paging
open MmuSpec.Spec.Ept

let private unknown name (value: obj) = invalidArg name $"no pattern for {value.GetType().FullName}: add it to MmuSpec.FSharp.Ept"

/// An EPT walk's outcome (SDM Vol. 3C §29.3.3): the L1 gpa, a violation with its exit qualification, or a misconfiguration.
let (|EptTranslated|EptViolation|EptMisconfiguration|) (result: EptResult) =
    match result with
    | :? EptResult.Translated as t -> EptTranslated(t.L1Gpa, t.Size, t.Rights)
    | :? EptResult.Violation as v -> EptViolation(v.Qualification, v.Gpa)
    | :? EptResult.Misconfiguration as m -> EptMisconfiguration(m.Kind, m.Level)
    | other -> unknown (nameof result) other

/// A 2D walk's outcome: both dimensions translated (L2 gpa, then the EPT's translation), a fault for L2, or a VM exit to L1.
let (|NestedTranslated|NestedGuestFault|NestedEptExit|) (result: NestedResult) =
    match result with
    | :? NestedResult.Translated as t -> NestedTranslated(t.L2Gpa, t.Ept)
    | :? NestedResult.GuestFault as f -> NestedGuestFault f.Result
    | :? NestedResult.EptExit as e -> NestedEptExit e.Exit
    | other -> unknown (nameof result) other

/// An operation the nested TLB layer (EptTlb, SDM Vol. 3C §29.4.3) applies: INVEPT, INVVPID (with their types),
/// VM entry and exit, an EPTP switch, an EPT violation.
let (|TlbInvept|TlbInvvpid|TlbVmEntry|TlbVmExit|TlbEptpSwitch|TlbEptViolation|) (op: EptTlbOp) =
    match op with
    | :? EptTlbOp.Invept as i -> TlbInvept(i.Type, i.Eptp)
    | :? EptTlbOp.Invvpid as i -> TlbInvvpid(i.Type, i.Vpid, i.Gva)
    | :? EptTlbOp.VmEntry as e -> TlbVmEntry(e.VpidEnabled, e.Vpid, e.Eptp)
    | :? EptTlbOp.VmExit -> TlbVmExit
    | :? EptTlbOp.EptpSwitch as s -> TlbEptpSwitch(s.Eptp, s.ByVmfunc)
    | :? EptTlbOp.EptViolation as v -> TlbEptViolation(v.Gpa, Option.ofNullable v.Gla)
    | other -> unknown (nameof op) other

/// An operation on the nested VM (NestedEptState): a memslot change, an L1 store, a VM entry with an EPTP, INVEPT, an L2 access by gpa,
/// or one of L2's own paging (NestedL2Paging: take it apart with NestedSetL2Paging | NestedL2GvaAccess; F# allows seven cases).
let (|NestedCreateSlot|NestedDeleteSlot|NestedL1Store|NestedLoadEptp|NestedInvept|NestedL2Access|NestedL2Paging|) (op: NestedEptOp) =
    match op with
    | :? NestedEptOp.CreateSlot as c -> NestedCreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase)
    | :? NestedEptOp.DeleteSlot as d -> NestedDeleteSlot d.Id
    | :? NestedEptOp.L1Store as s -> NestedL1Store(s.Gpa, s.Value, s.Size)
    | :? NestedEptOp.LoadEptp as l -> NestedLoadEptp l.Eptp
    | :? NestedEptOp.Invept as i -> NestedInvept(i.Type, i.Eptp)
    | :? NestedEptOp.L2Access as a -> NestedL2Access(a.Gpa, a.Type)
    | :? NestedEptOp.SetL2Paging
    | :? NestedEptOp.L2GvaAccess -> NestedL2Paging op
    | other -> unknown (nameof op) other

/// L2's own paging: L1 enters L2 with L2's CPU state (None: paging off), or L2 accesses a linear address (the 2D walk).
let (|NestedSetL2Paging|NestedL2GvaAccess|) (op: NestedEptOp) =
    match op with
    | :? NestedEptOp.SetL2Paging as p -> NestedSetL2Paging(Option.ofObj p.Cpu)
    | :? NestedEptOp.L2GvaAccess as a -> NestedL2GvaAccess a.Access
    | other -> unknown (nameof op) other

/// What a nested VM step returned: ok, rejected (why), L2's gpa translated (L1 gpa, hpa), an EPT exit to L1, an MMIO exit at L1's gpa, a fault L2's own tables raise.
/// VPIDs and VMFUNC (NestedEptState.Vpid.cs): Some op for a VM exit, a VM entry, INVVPID or VMFUNC, taken apart with
/// NestedVmExit | NestedVmEntry | NestedInvvpid | NestedVmfunc. Match it before the seven-case pattern, which names the rest.
let (|NestedVpidOp|_|) (op: NestedEptOp) =
    match op with
    | :? NestedEptOp.VmExit
    | :? NestedEptOp.VmEntry
    | :? NestedEptOp.Invvpid
    | :? NestedEptOp.Vmfunc -> Some op
    | _ -> None

/// A VM exit; a VM entry (enable VPID, VPID, the EPTP-list address if EPTP switching is on); INVVPID (type, VPID, gva); VMFUNC leaf 0 (ECX).
let (|NestedVmExit|NestedVmEntry|NestedInvvpid|NestedVmfunc|) (op: NestedEptOp) =
    match op with
    | :? NestedEptOp.VmExit -> NestedVmExit
    | :? NestedEptOp.VmEntry as e -> NestedVmEntry(e.VpidEnabled, e.Vpid, Option.ofNullable e.EptpList)
    | :? NestedEptOp.Invvpid as i -> NestedInvvpid(i.Type, i.Vpid, i.Gva)
    | :? NestedEptOp.Vmfunc as f -> NestedVmfunc f.Index
    | other -> unknown (nameof op) other

let (|NestedOk|NestedRejected|NestedL2Translated|NestedExitToL1|NestedMmioExit|NestedL2Fault|NestedVmfuncExit|) (result: VmResult) =
    match result with
    | :? VmResult.Ok -> NestedOk
    | :? VmResult.Rejected as r -> NestedRejected r.Reason
    | :? NestedEptResult.Translated as t -> NestedL2Translated(t.L2Gpa, t.L1Gpa, t.Hpa)
    | :? NestedEptResult.EptExit as e -> NestedExitToL1 e.Exit
    | :? NestedEptResult.MmioExit as m -> NestedMmioExit m.L1Gpa
    | :? NestedEptResult.GuestFault as f -> NestedL2Fault f.Fault
    | :? NestedEptResult.VmfuncExit as v -> NestedVmfuncExit v.Index
    | other -> unknown (nameof result) other

/// One step of the nested VM: its state afterwards and the result.
let nestedStep op (state: NestedEptState) =
    let struct (after, result) = state.Step op
    after, result

/// Why an EPTP is invalid on these capabilities (SDM Vol. 3C §25.6.11), or None.
let pointerProblem caps (eptp: EptPointer) = eptp.Problem caps |> Option.ofNullable

/// One EPT walk: its outcome and L1's memory after the EPT A/D updates.
let translate caps eptp (access: EptAccess) (l1Memory: GuestMemory) =
    let t = EptWalk.Translate(caps, eptp, l1Memory, access)
    t.Result, t.Memory

/// One L2 access through L2's tables (None: paging off) and L1's EPT: its outcome and L1's memory afterwards.
let nested caps eptp (l2Cpu: CpuState option) (access: Access) (l1Memory: GuestMemory) =
    let t = NestedWalk.Translate(caps, eptp, Option.toObj l2Cpu, l1Memory, access)
    t.Result, t.L1Memory
