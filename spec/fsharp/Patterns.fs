/// Active patterns over the spec's C# hierarchies, so F# code can `match` a walk's outcome, an
/// operation or a result the way it would match a discriminated union. Each C# hierarchy is a
/// sealed record family (a private base constructor, sealed cases). A hierarchy of at most seven
/// cases gets one total pattern; F# allows at most seven cases per pattern, so the op families
/// (TdpOp, ShadowOp) are matched in parts, each total over every op, whose last case carries the rest;
/// so is VmResult, whose rest (MmuOutcome) the TDP and shadow result patterns take apart.
/// A one-part pattern's fallback throws: only a case added in C# without a pattern here reaches it
/// (or, for the op families, lands in a rest case), which the F# tests catch: LayerTests.fs lists
/// every sealed case of every hierarchy by reflection.
module MmuSpec.FSharp.Patterns

open MmuSpec.Spec.Paging
open MmuSpec.Spec.GuestWalk

let private unknown name (value: obj) = invalidArg name $"no pattern for {value.GetType().FullName}: add it to MmuSpec.FSharp.Patterns"

/// A walk's outcome (SDM Vol. 3 §4.7): a translation, a #PF with its error code, or a #GP.
let (|Translated|PageFault|GeneralProtection|) (result: WalkResult) =
    match result with
    | :? WalkResult.Translated as t -> Translated(t.Gpa, t.Size, t.Rights)
    | :? WalkResult.PageFault as f -> PageFault f.ErrorCode
    | :? WalkResult.GeneralProtection as g -> GeneralProtection g.Reason
    | other -> unknown (nameof result) other

/// MOV CR3's outcome (SDM §4.4.1, §4.5): the loaded CPU state (PAE: with its PDPTE registers), or #GP.
let (|Cr3Loaded|Cr3Gp|) (loaded: CpuStateOrGp) =
    match loaded.State, loaded.Fault with
    | NonNull cpu, _ -> Cr3Loaded cpu
    | Null, reason when reason.HasValue -> Cr3Gp reason.Value
    | _ -> invalidArg (nameof loaded) "a CpuStateOrGp with neither a state nor a #GP reason"

/// What a machine step returned: nothing to report, a walk's outcome, or a #GP from MOV CR3 or a
/// control change (the state is unchanged then).
let (|Completed|Walked|GpFault|) (result: OpResult) =
    match result with
    | :? OpResult.Completed -> Completed
    | :? OpResult.Walked as w -> Walked w.Result
    | :? OpResult.GeneralProtection as g -> GpFault g.Reason
    | other -> unknown (nameof result) other

/// A machine operation.
let (|GuestAccess|WriteGuest|LoadCr3|SetControls|) (op: Op) =
    match op with
    | :? Op.GuestAccess as a -> GuestAccess a.Access
    | :? Op.WriteGuest as w -> WriteGuest(w.Gpa, w.Value, w.Size)
    | :? Op.LoadCr3 as l -> LoadCr3 l.Cr3
    | :? Op.SetControls as s -> SetControls s.Controls
    | other -> unknown (nameof op) other

/// The #PF error code (SDM §4.7, Figure 4-12) as an F# record of booleans.
type ErrorBits =
    { Present: bool
      Write: bool
      User: bool
      Reserved: bool
      Fetch: bool
      ProtectionKey: bool }

/// Splits an error code into its bits: `match r with PageFault(FaultBits b) when b.Reserved -> ...`.
let (|FaultBits|) (code: PageFaultErrorCode) =
    let has flag = code &&& flag = flag
    { Present = has PageFaultErrorCode.Present
      Write = has PageFaultErrorCode.Write
      User = has PageFaultErrorCode.User
      Reserved = has PageFaultErrorCode.ReservedBit
      Fetch = has PageFaultErrorCode.InstructionFetch
      ProtectionKey = has PageFaultErrorCode.ProtectionKey }

/// A #PF caused by a not-present entry (error code P=0).
let (|NotPresentFault|_|) (result: WalkResult) =
    match result with
    | PageFault(FaultBits b) when not b.Present -> Some b
    | _ -> None

/// A #PF caused by a reserved bit (error code P=1, RSVD=1).
let (|ReservedBitFault|_|) (result: WalkResult) =
    match result with
    | PageFault(FaultBits b) when b.Reserved -> Some b
    | _ -> None

/// A #PF caused by access rights or protection keys (P=1, RSVD=0).
let (|RightsFault|_|) (result: WalkResult) =
    match result with
    | PageFault(FaultBits b) when b.Present && not b.Reserved -> Some b
    | _ -> None

open MmuSpec.Spec.Memory

/// What an operation returned, whichever MMU ran it: the outcomes both share (a memslot operation
/// returns only these: ok, rejected with a reason, a slot's dirty gfns), or the MMU's own outcome
/// of an access (a TdpResult or a ShadowResult), which MmuOutcome carries.
let (|VmOk|VmRejected|VmDirtyLog|MmuOutcome|) (result: VmResult) =
    match result with
    | :? VmResult.Ok -> VmOk
    | :? VmResult.Rejected as r -> VmRejected r.Reason
    | :? VmResult.DirtyLog as d -> VmDirtyLog(List.ofSeq d.Gfns)
    | other -> MmuOutcome other

open MmuSpec.Spec.Tdp

/// Age and TestAge's answer (docs/tdp-model.md, "Aging"): whether a leaf in the range was young. A partial
/// pattern, matched before the one below, which has F#'s limit of seven cases and raises for this answer.
let (|TdpYoung|_|) (result: VmResult) =
    match result with
    | :? TdpResult.Young as y -> Some y.IsYoung
    | _ -> None

/// What a TDP MMU operation returned (docs/tdp-model.md); TdpPopulated: the bytes a pre-fault mapped from its gpa.
let (|TdpOk|TdpRejected|TdpMapped|TdpPopulated|TdpMmioExit|TdpGuestFault|TdpDirtyLog|) (result: VmResult) =
    match result with
    | VmOk -> TdpOk
    | VmRejected why -> TdpRejected why
    | VmDirtyLog gfns -> TdpDirtyLog gfns
    | MmuOutcome(:? TdpResult.Mapped as m) -> TdpMapped(m.Hpa, m.Size, m.Faulted)
    | MmuOutcome(:? TdpResult.Populated as p) -> TdpPopulated p.Bytes
    | MmuOutcome(:? TdpResult.MmioExit as e) -> TdpMmioExit e.Gpa
    | MmuOutcome(:? TdpResult.GuestFault as f) -> TdpGuestFault f.Fault
    | MmuOutcome other -> unknown (nameof result) other

/// A fault that met a host invalidation of its gfn and maps nothing (MMU notifiers, docs/tdp-model.md).
/// Match it before the pattern above, which has F#'s limit of seven cases and calls a Retry unknown.
let (|TdpRetry|_|) (result: VmResult) =
    match result with
    | :? TdpResult.Retry -> Some()
    | _ -> None

/// A TDP guest operation: an access to a gpa, a store, paging off (None) or controls and CR3, an
/// access to a linear address; the host's operations match TdpHostOp.
let (|TdpAccessGpa|TdpGuestStore|TdpGuestSetPaging|TdpGuestAccess|TdpHostOp|) (op: TdpOp) =
    match op with
    | :? TdpOp.AccessGpa as a -> TdpAccessGpa(a.Gpa, a.Type)
    | :? TdpOp.GuestStore as s -> TdpGuestStore(s.Gpa, s.Value, s.Size)
    | :? TdpOp.GuestSetPaging as p -> TdpGuestSetPaging(Option.ofObj p.Controls, p.Cr3)
    | :? TdpOp.GuestAccess as a -> TdpGuestAccess a.Access
    | _ -> TdpHostOp op

/// A TDP memslot operation; zaps and the huge-page limit match TdpNotSlotOp, as do guest operations.
let (|TdpCreateSlot|TdpDeleteSlot|TdpMoveSlot|TdpSetDirtyLogging|TdpGetDirtyLog|TdpNotSlotOp|) (op: TdpOp) =
    match op with
    | :? TdpOp.CreateSlot as c -> TdpCreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, c.HostPageSize, c.ReadOnly)
    | :? TdpOp.DeleteSlot as d -> TdpDeleteSlot d.Id
    | :? TdpOp.MoveSlot as m -> TdpMoveSlot(m.Id, m.NewBaseGfn)
    | :? TdpOp.SetDirtyLogging as l -> TdpSetDirtyLogging(l.Id, l.On)
    | :? TdpOp.GetDirtyLog as g -> TdpGetDirtyLog g.Id
    | _ -> TdpNotSlotOp op

/// The host's own MMU operations: a zap (TdpZap None is ZapAll), the largest page size it may map,
/// a range pre-faulted as KVM_PRE_FAULT_MEMORY does (gpa, size in bytes), and aging over a gfn range.
let (|TdpZap|TdpSetMaxPageSize|TdpPreFault|TdpAge|TdpTestAge|TdpNotMmuOp|) (op: TdpOp) =
    match op with
    | :? TdpOp.Age as a -> TdpAge(a.StartGfn, a.EndGfn)
    | :? TdpOp.TestAge as t -> TdpTestAge(t.StartGfn, t.EndGfn)
    | :? TdpOp.ZapRange as z -> TdpZap(Some(z.StartGfn, z.EndGfn))
    | :? TdpOp.ZapAll -> TdpZap None
    | :? TdpOp.SetMaxPageSize as s -> TdpSetMaxPageSize s.Size
    | :? TdpOp.PreFault as p -> TdpPreFault(p.Gpa, p.Size)
    | _ -> TdpNotMmuOp op

/// The host's MMU-notifier invalidations (docs/tdp-model.md, "MMU notifiers"): Start and End of a gfn range.
let (|TdpInvalidateStart|TdpInvalidateEnd|TdpNotNotifierOp|) (op: TdpOp) =
    match op with
    | :? TdpOp.HostInvalidateStart as s -> TdpInvalidateStart(s.StartGfn, s.EndGfn)
    | :? TdpOp.HostInvalidateEnd as e -> TdpInvalidateEnd(e.StartGfn, e.EndGfn)
    | _ -> TdpNotNotifierOp op

/// The host's write tracking of a gfn (TdpState.WriteTracking.cs; the concurrent MMU's `tdp-concurrent` draws it).
let (|TdpTrackWrites|TdpUntrackWrites|TdpNotTrackingOp|) (op: TdpOp) =
    match op with
    | :? TdpOp.TrackWrites as t -> TdpTrackWrites t.Gfn
    | :? TdpOp.UntrackWrites as u -> TdpUntrackWrites u.Gfn
    | _ -> TdpNotTrackingOp op

/// A present entry of a TDP table page: a link to a child table or a leaf mapping.
let (|TableLink|LeafMapping|) (entry: Spte) =
    match entry with
    | :? Spte.Table as t -> TableLink t.Child
    | :? Spte.Leaf as l -> LeafMapping(l.Gfn, l.Level, l.HostPfn, l.Writable)
    | other -> unknown (nameof entry) other

open MmuSpec.Spec.Shadow

/// A shadow-VM guest operation (docs/shadow-model.md); TLB and CR3 operations match ShadowTlbOp,
/// the host's operations ShadowHostOp.
let (|ShadowGuestStore|ShadowGuestSetPaging|ShadowGuestAccess|ShadowTlbOp|ShadowHostOp|) (op: ShadowOp) =
    match op with
    | :? ShadowOp.GuestStore as s -> ShadowGuestStore(s.Gpa, s.Value, s.Size)
    | :? ShadowOp.GuestSetPaging as p -> ShadowGuestSetPaging(p.Controls, p.Cr3, p.Pcide)
    | :? ShadowOp.GuestAccess as a -> ShadowGuestAccess a.Access
    | :? ShadowOp.GuestMovCr3 | :? ShadowOp.Invlpg | :? ShadowOp.Invpcid | :? ShadowOp.FlushTlb -> ShadowTlbOp op
    | _ -> ShadowHostOp op

/// MOV CR3 (the raw operand: NOFLUSH in bit 63, PCID in bits 11:0 with CR4.PCIDE), INVLPG, INVPCID
/// (type, pcid, gva) and a full flush; every other operation matches ShadowNotTlbOp.
let (|ShadowMovCr3|ShadowInvlpg|ShadowInvpcid|ShadowFlushTlb|ShadowNotTlbOp|) (op: ShadowOp) =
    match op with
    | :? ShadowOp.GuestMovCr3 as m -> ShadowMovCr3 m.Cr3
    | :? ShadowOp.Invlpg as i -> ShadowInvlpg i.Gva
    | :? ShadowOp.Invpcid as i -> ShadowInvpcid(i.Type, i.Pcid, i.Gva)
    | :? ShadowOp.FlushTlb -> ShadowFlushTlb
    | _ -> ShadowNotTlbOp op

/// A shadow-VM host operation: memslots, dirty logging, zaps (ShadowZap None is ZapAll); guest operations match ShadowGuestOp.
let (|ShadowCreateSlot|ShadowDeleteSlot|ShadowMoveSlot|ShadowSetDirtyLogging|ShadowGetDirtyLog|ShadowZap|ShadowGuestOp|) (op: ShadowOp) =
    match op with
    | :? ShadowOp.CreateSlot as c -> ShadowCreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, c.ReadOnly)
    | :? ShadowOp.DeleteSlot as d -> ShadowDeleteSlot d.Id
    | :? ShadowOp.MoveSlot as m -> ShadowMoveSlot(m.Id, m.NewBaseGfn)
    | :? ShadowOp.SetDirtyLogging as l -> ShadowSetDirtyLogging(l.Id, l.On)
    | :? ShadowOp.GetDirtyLog as g -> ShadowGetDirtyLog g.Id
    | :? ShadowOp.ZapRange as z -> ShadowZap(Some(z.StartGfn, z.EndGfn))
    | :? ShadowOp.ZapAll -> ShadowZap None
    | _ -> ShadowGuestOp op

/// What a shadow-VM operation returned.
let (|ShadowOk|ShadowRejected|ShadowTranslated|ShadowMmioExit|ShadowGuestFault|ShadowDirtyLog|) (result: VmResult) =
    match result with
    | VmOk -> ShadowOk
    | VmRejected why -> ShadowRejected why
    | VmDirtyLog gfns -> ShadowDirtyLog gfns
    | MmuOutcome(:? ShadowResult.Translated as t) -> ShadowTranslated(t.Gpa, t.Hpa, t.Faulted)
    | MmuOutcome(:? ShadowResult.MmioExit as e) -> ShadowMmioExit e.Gpa
    | MmuOutcome(:? ShadowResult.GuestFault as f) -> ShadowGuestFault f.Fault
    | MmuOutcome other -> unknown (nameof result) other

/// A present shadow entry: a link to a child shadow page, or a 4 KiB leaf (gfn, host frame, guest rights, the MMU's W bit).
let (|ShadowTableLink|ShadowLeaf|) (entry: ShadowEntry) =
    match entry with
    | :? ShadowEntry.Table as t -> ShadowTableLink t.Child
    | :? ShadowEntry.Leaf as l -> ShadowLeaf(l.Gfn, l.HostPfn, l.Rights, l.Writable)
    | other -> unknown (nameof entry) other
