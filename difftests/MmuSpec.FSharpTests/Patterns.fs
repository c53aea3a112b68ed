/// Active patterns over the spec's C# result types, so F# code can `match` a walk's outcome the way
/// it would match a discriminated union. The C# types are sealed record hierarchies
/// (WalkResult, OpResult, Op); each pattern below is total over its hierarchy.
module MmuSpec.FSharp.Patterns

open MmuSpec.Spec.Paging
open MmuSpec.Spec.Machine

/// A walk's outcome (SDM Vol. 3 §4.7): a translation, a #PF with its error code, or a #GP.
let (|Translated|PageFault|GeneralProtection|) (result: WalkResult) =
    match result with
    | :? WalkResult.Translated as t -> Translated(t.Gpa, t.Size, t.Rights)
    | :? WalkResult.PageFault as f -> PageFault f.ErrorCode
    | :? WalkResult.GeneralProtection as g -> GeneralProtection g.Reason
    | other -> invalidArg (nameof result) $"unknown WalkResult {other}"

/// What a machine step returned: nothing to report, a walk's outcome, or a #GP from MOV CR3 or a
/// control change (the state is unchanged then).
let (|Completed|Walked|GpFault|) (result: OpResult) =
    match result with
    | :? OpResult.Completed -> Completed
    | :? OpResult.Walked as w -> Walked w.Result
    | :? OpResult.GeneralProtection as g -> GpFault g.Reason
    | other -> invalidArg (nameof result) $"unknown OpResult {other}"

/// A machine operation.
let (|GuestAccess|WriteGuest|LoadCr3|SetControls|) (op: Op) =
    match op with
    | :? Op.GuestAccess as a -> GuestAccess a.Access
    | :? Op.WriteGuest as w -> WriteGuest(w.Gpa, w.Value, w.Size)
    | :? Op.LoadCr3 as l -> LoadCr3 l.Cr3
    | :? Op.SetControls as s -> SetControls s.Controls
    | other -> invalidArg (nameof op) $"unknown Op {other}"

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

open MmuSpec.Spec.Tdp

/// What a TDP MMU operation returned (docs/tdp-model.md).
let (|TdpOk|TdpRejected|TdpMapped|TdpMmioExit|TdpDirtyLog|) (result: TdpResult) =
    match result with
    | :? TdpResult.Ok -> TdpOk
    | :? TdpResult.Rejected as r -> TdpRejected r.Reason
    | :? TdpResult.Mapped as m -> TdpMapped(m.Hpa, m.Size, m.Faulted)
    | :? TdpResult.MmioExit as e -> TdpMmioExit e.Gpa
    | :? TdpResult.DirtyLog as d -> TdpDirtyLog(List.ofSeq d.Gfns)
    | other -> invalidArg (nameof result) $"unknown TdpResult {other}"

/// A present entry of a TDP table page: a link to a child table or a leaf mapping.
let (|TableLink|LeafMapping|) (entry: Spte) =
    match entry with
    | :? Spte.Table as t -> TableLink t.Child
    | :? Spte.Leaf as l -> LeafMapping(l.Gfn, l.Level, l.HostPfn, l.Writable)
    | other -> invalidArg (nameof entry) $"unknown Spte {other}"
