/// Tests of the F# layer shipped with the spec (spec/fsharp): its closed types carry what the C#
/// API's nulls drop, and its patterns name every case of every sealed hierarchy in the spec.
module MmuSpec.FSharp.LayerTests

open System
open System.Collections.Immutable
open System.Reflection
open Xunit
open MmuSpec.Spec.Memory
open MmuSpec.Spec.Paging
open MmuSpec.Spec.GuestWalk
open MmuSpec.Spec.Tdp
open MmuSpec.Spec.Shadow
open MmuSpec.Spec.Ept
open MmuSpec.FSharp.Patterns
open MmuSpec.FSharp.Ept

let private P, W, U = 0x1UL, 0x2UL, 0x4UL
let private ram = Memory.ofSlots [ Memslot(0UL, 16UL) ]

// ---- closed types where C# returns null ----

/// SDM §4.5: CR3 bits at or above MAXPHYADDR are reserved in IA-32e paging; §4.4.1: PAE loads the
/// PDPTEs at MOV CR3, and a present one with a reserved bit (here R/W, bit 1) is #GP.
[<Fact>]
let ``Walk.boot keeps the #GP reason GuestMachine.Boot drops`` () =
    let long4 = PagingControls(PagingMode.Long4, maxPhyAddr = 46)
    let pae = PagingControls(PagingMode.Pae, maxPhyAddr = 46)
    let badPdpte = ram |> Memory.write 0x1000UL (0x2000UL ||| P ||| W) 8
    let cases =
        [ long4, 1UL <<< 50, ram, GpReason.Cr3ReservedBits
          pae, 0x1000UL, badPdpte, GpReason.PdpteReservedBits
          pae, 0x100000UL, ram, GpReason.PdptNotInMemory ]
    for controls, cr3, memory, reason in cases do
        Assert.Null(GuestMachine.Boot(controls, cr3, memory))
        Assert.Equal(Gp reason, Walk.boot controls cr3 memory)
        Assert.Equal(Gp reason, Walk.loadCr3 controls cr3 memory)
    match Walk.boot long4 0x1000UL ram with
    | Booted machine -> Assert.Equal(GuestMachine.Boot(long4, 0x1000UL, ram), machine)
    | Gp reason -> failwithf "a clean CR3 raised #GP (%O)" reason

[<Fact>]
let ``Memory reads are None outside every memslot and Some inside`` () =
    let memory = ram |> Memory.write 0xFFF8UL 0x1234_5678_9ABC_DEF0UL 8
    Assert.Equal(Some 0x1234_5678_9ABC_DEF0UL, Memory.read64 0xFFF8UL memory)
    Assert.Equal(Some 0x1234_5678u, Memory.read32 0xFFFCUL memory)
    Assert.Equal(Some 0x9ABC_DEF0UL, Memory.read 0xFFF8UL 4 memory)
    Assert.Equal(None, Memory.read64 0x10000UL memory)
    Assert.Equal(None, Memory.read32 0x10000UL memory)
    Assert.Equal(memory, Memory.write 0x10000UL 1UL 8 memory)

/// docs/tdp-model.md: a root exists from the first fault that needs it until ZapAll; the guest's
/// paging is off until it loads controls and CR3.
[<Fact>]
let ``The TDP state's nullable parts are options`` () =
    let controls = PagingControls(PagingMode.Long4, maxPhyAddr = 46)
    let vm = Tdp.create (VmConfig(TdpFormat.Ept))
    Assert.Equal((None, None, None), (Tdp.guestCpu vm, Tdp.directRoot vm, Tdp.mirrorRoot vm))
    let results, faulted =
        Tdp.run [ Tdp.createSlot 0 0UL 16UL 0x100UL PageSize.Size4K false
                  Tdp.accessGpa 0x1000UL AccessType.Read
                  Tdp.guestSetPaging (Some controls) 0x1000UL ] vm
    match results with
    | [ TdpOk; TdpMapped(0x101000UL, PageSize.Size4K, true); TdpOk ] -> ()
    | other -> failwithf "expected ok, a fault mapping host frame 0x101 and ok, got %A" other
    Assert.Equal(Some controls, Tdp.guestCpu faulted |> Option.map _.Controls)
    Assert.Equal(Some 4, Tdp.directRoot faulted |> Option.map _.Role.Level)
    Assert.Equal(None, Tdp.mirrorRoot faulted)
    let _, off = Tdp.run [ Tdp.guestSetPaging None 0UL; Tdp.zapAll ] faulted
    Assert.Equal((None, None), (Tdp.guestCpu off, Tdp.directRoot off))

let private pwua = 0x27UL   // P, R/W, U/S, A

/// A 4-level guest whose one path maps gva 0 to data gfn 0x400, backed by host frame 0x8000.
let private shadowGuest =
    let controls = PagingControls(PagingMode.Long4, maxPhyAddr = 46)
    [ Shadow.createSlot 0 0x100UL 16UL 0x5000UL false
      Shadow.createSlot 1 0x400UL 16UL 0x8000UL false
      Shadow.guestStore 0x100000UL (0x101000UL ||| pwua) 8
      Shadow.guestStore 0x101000UL (0x102000UL ||| pwua) 8
      Shadow.guestStore 0x102000UL (0x103000UL ||| pwua) 8
      Shadow.guestStore 0x103000UL (0x400000UL ||| pwua ||| 0x40UL) 8
      Shadow.guestSetPaging controls 0x100000UL ]

/// docs/shadow-model.md, "Oracle 2": an access is allowed what the guest's tables give; a host frame
/// other than the slot's for the gpa is a violation, and the verdict says why.
[<Fact>]
let ``Shadow.judge gives an allowed result Allowed and a wrong one its reason`` () =
    let _, before = Shadow.run shadowGuest (Shadow.create (ShadowConfig 46))
    let tlb = Shadow.tlbStart before
    let read = Shadow.guestAccess (Access.Read(0x10UL))
    let result, after = Shadow.step read before
    Assert.Equal(ShadowResult.Translated(0x400010UL, 0x8000010UL, true) :> VmResult, result)
    Assert.Equal(Allowed, Shadow.judge read result after tlb)
    let wrong = ShadowResult.Translated(0x400010UL, 0x9000010UL, true)
    match Shadow.judge read wrong after tlb with
    | Violates why ->
        Assert.Contains("was mapped at hpa", why)
        Assert.Equal(tlb.Violation(read, wrong, after), why)
    | Allowed -> failwith "a translation to another slot's frame was allowed"
    // With paging off no access may be served; the reason names that.
    let off = Shadow.create (ShadowConfig 46)
    Assert.Equal((None, None), (Shadow.guestCpu off, Shadow.currentRoot off))
    Assert.Equal(Some 0x100000UL, Shadow.guestCpu after |> Option.map _.Cr3)
    Assert.Equal(Some 0x100000UL, Shadow.currentRoot after |> Option.map _.Pgd)
    match Shadow.judge read result off (Shadow.tlbStart off) with
    | Violates why -> Assert.Contains("paging off", why)
    | Allowed -> failwith "an access served with paging off was allowed"

// ---- every case of every hierarchy has a pattern ----

// What each pattern module names a value, as the C# case's type name: a case the patterns do not
// know throws (one-part patterns) or lands in the last rest case (the op families), and either way
// fails the test below.
let private walkResultCase =
    function
    | Translated _ -> "Translated"
    | PageFault _ -> "PageFault"
    | GeneralProtection _ -> "GeneralProtection"

let private opResultCase =
    function
    | Completed -> "Completed"
    | Walked _ -> "Walked"
    | GpFault _ -> "GeneralProtection"

let private opCase =
    function
    | GuestAccess _ -> "GuestAccess"
    | WriteGuest _ -> "WriteGuest"
    | LoadCr3 _ -> "LoadCr3"
    | SetControls _ -> "SetControls"

let private vmResultCase =
    function
    | VmOk -> "Ok"
    | VmRejected _ -> "Rejected"
    | VmDirtyLog _ -> "DirtyLog"
    | MmuOutcome other -> $"an MMU's own outcome {other.GetType().Name}"

let private tdpResultCase =
    function
    | TdpYoung _ -> "Young"
    | TdpRetry -> "Retry"
    | TdpOk -> "Ok"
    | TdpRejected _ -> "Rejected"
    | TdpMapped _ -> "Mapped"
    | TdpPopulated _ -> "Populated"
    | TdpMmioExit _ -> "MmioExit"
    | TdpGuestFault _ -> "GuestFault"
    | TdpDirtyLog _ -> "DirtyLog"

let private tdpOpCase =
    function
    | TdpAccessGpa _ -> "AccessGpa"
    | TdpGuestStore _ -> "GuestStore"
    | TdpGuestSetPaging _ -> "GuestSetPaging"
    | TdpGuestAccess _ -> "GuestAccess"
    | TdpHostOp(TdpCreateSlot _) -> "CreateSlot"
    | TdpHostOp(TdpDeleteSlot _) -> "DeleteSlot"
    | TdpHostOp(TdpMoveSlot _) -> "MoveSlot"
    | TdpHostOp(TdpSetDirtyLogging _) -> "SetDirtyLogging"
    | TdpHostOp(TdpGetDirtyLog _) -> "GetDirtyLog"
    | TdpHostOp(TdpNotSlotOp(TdpZap(Some _))) -> "ZapRange"
    | TdpHostOp(TdpNotSlotOp(TdpZap None)) -> "ZapAll"
    | TdpHostOp(TdpNotSlotOp(TdpSetMaxPageSize _)) -> "SetMaxPageSize"
    | TdpHostOp(TdpNotSlotOp(TdpPreFault _)) -> "PreFault"
    | TdpHostOp(TdpNotSlotOp(TdpAge _)) -> "Age"
    | TdpHostOp(TdpNotSlotOp(TdpTestAge _)) -> "TestAge"
    | TdpHostOp(TdpNotSlotOp(TdpNotMmuOp(TdpInvalidateStart _))) -> "HostInvalidateStart"
    | TdpHostOp(TdpNotSlotOp(TdpNotMmuOp(TdpInvalidateEnd _))) -> "HostInvalidateEnd"
    | TdpHostOp(TdpNotSlotOp(TdpNotMmuOp(TdpNotNotifierOp(TdpTrackWrites _)))) -> "TrackWrites"
    | TdpHostOp(TdpNotSlotOp(TdpNotMmuOp(TdpNotNotifierOp(TdpUntrackWrites _)))) -> "UntrackWrites"
    | TdpHostOp(TdpNotSlotOp(TdpNotMmuOp(TdpNotNotifierOp(TdpNotTrackingOp op)))) -> $"no pattern for {op.GetType().Name}"

let private spteCase =
    function
    | TableLink _ -> "Table"
    | LeafMapping _ -> "Leaf"

let private shadowOpCase =
    function
    | ShadowGuestStore _ -> "GuestStore"
    | ShadowGuestSetPaging _ -> "GuestSetPaging"
    | ShadowGuestAccess _ -> "GuestAccess"
    | ShadowTlbOp(ShadowMovCr3 _) -> "GuestMovCr3"
    | ShadowTlbOp(ShadowInvlpg _) -> "Invlpg"
    | ShadowTlbOp(ShadowInvpcid _) -> "Invpcid"
    | ShadowTlbOp(ShadowFlushTlb) -> "FlushTlb"
    | ShadowTlbOp(ShadowNotTlbOp op) -> $"no TLB pattern for {op.GetType().Name}"
    | ShadowHostOp(ShadowCreateSlot _) -> "CreateSlot"
    | ShadowHostOp(ShadowDeleteSlot _) -> "DeleteSlot"
    | ShadowHostOp(ShadowMoveSlot _) -> "MoveSlot"
    | ShadowHostOp(ShadowSetDirtyLogging _) -> "SetDirtyLogging"
    | ShadowHostOp(ShadowGetDirtyLog _) -> "GetDirtyLog"
    | ShadowHostOp(ShadowZap(Some _)) -> "ZapRange"
    | ShadowHostOp(ShadowZap None) -> "ZapAll"
    | ShadowHostOp(ShadowGuestOp op) -> $"no pattern for {op.GetType().Name}"

let private shadowResultCase =
    function
    | ShadowOk -> "Ok"
    | ShadowRejected _ -> "Rejected"
    | ShadowTranslated _ -> "Translated"
    | ShadowMmioExit _ -> "MmioExit"
    | ShadowGuestFault _ -> "GuestFault"
    | ShadowDirtyLog _ -> "DirtyLog"

let private shadowEntryCase =
    function
    | ShadowTableLink _ -> "Table"
    | ShadowLeaf _ -> "Leaf"

let private eptResultCase =
    function
    | EptTranslated _ -> "Translated"
    | EptViolation _ -> "Violation"
    | EptMisconfiguration _ -> "Misconfiguration"

let private nestedResultCase =
    function
    | NestedTranslated _ -> "Translated"
    | NestedGuestFault _ -> "GuestFault"
    | NestedEptExit _ -> "EptExit"

let private eptTlbOpCase =
    function
    | TlbInvept _ -> "Invept"
    | TlbInvvpid _ -> "Invvpid"
    | TlbVmEntry _ -> "VmEntry"
    | TlbVmExit -> "VmExit"
    | TlbEptpSwitch _ -> "EptpSwitch"
    | TlbEptViolation _ -> "EptViolation"

let private nestedEptOpCase =
    function
    | NestedVpidOp NestedVmExit -> "VmExit"
    | NestedVpidOp(NestedVmEntry _) -> "VmEntry"
    | NestedVpidOp(NestedInvvpid _) -> "Invvpid"
    | NestedVpidOp(NestedVmfunc _) -> "Vmfunc"
    | NestedCreateSlot _ -> "CreateSlot"
    | NestedDeleteSlot _ -> "DeleteSlot"
    | NestedL1Store _ -> "L1Store"
    | NestedLoadEptp _ -> "LoadEptp"
    | NestedInvept _ -> "Invept"
    | NestedL2Access _ -> "L2Access"
    | NestedL2Paging(NestedSetL2Paging _) -> "SetL2Paging"
    | NestedL2Paging(NestedL2GvaAccess _) -> "L2GvaAccess"

let private nestedEptResultCase =
    function
    | NestedOk -> "Ok"
    | NestedRejected _ -> "Rejected"
    | NestedL2Translated _ -> "Translated"
    | NestedExitToL1 _ -> "EptExit"
    | NestedMmioExit _ -> "MmioExit"
    | NestedL2Fault _ -> "GuestFault"
    | NestedVmfuncExit _ -> "VmfuncExit"

/// Each hierarchy's base type and how the patterns name one of its values.
let private classifiers: (Type * (obj -> string)) list =
    let by (f: 'T -> string) = typeof<'T>, (fun (o: obj) -> f (o :?> 'T))
    // TDP and shadow steps return a VmResult: its own cases, or one of the MMU's.
    let byVm (mmu: Type) (f: VmResult -> string) = mmu, (fun (o: obj) -> f (o :?> VmResult))
    [ by walkResultCase; by opResultCase; by opCase; by vmResultCase; byVm typeof<TdpResult> tdpResultCase; by tdpOpCase
      by spteCase; by shadowOpCase; byVm typeof<ShadowResult> shadowResultCase; by shadowEntryCase
      by eptResultCase; by nestedResultCase; by eptTlbOpCase; by nestedEptOpCase; byVm typeof<NestedEptResult> nestedEptResultCase ]

/// A hierarchy's cases: the sealed types nested in an abstract base that derive from it.
let private casesOf (baseType: Type) =
    baseType.GetNestedTypes() |> Array.filter (fun t -> t.IsSealed && t.IsSubclassOf baseType) |> List.ofArray

/// An argument the patterns can read (they take fields apart but check nothing).
let private sample (t: Type) : obj =
    if t = typeof<ImmutableArray<uint64>> then box ImmutableArray<uint64>.Empty
    elif t = typeof<string> then box "a reason"
    elif t = typeof<WalkResult> then box (WalkResult.GeneralProtection GpReason.NonCanonical)
    elif t = typeof<PagingControls> then box (PagingControls(PagingMode.Long4))
    elif t = typeof<Access> then box (Access.Read 0UL)
    elif t.IsValueType && Nullable.GetUnderlyingType t = null then Activator.CreateInstance t
    else null

let private instanceOf (case: Type) =
    let ctor = case.GetConstructors() |> Array.maxBy (fun c -> c.GetParameters().Length)
    ctor.Invoke(ctor.GetParameters() |> Array.map (fun p -> sample p.ParameterType))

[<Fact>]
let ``Every sealed hierarchy of the spec has patterns`` () =
    let spec = typeof<WalkResult>.Assembly
    let hierarchies =
        spec.GetExportedTypes()
        |> Array.filter (fun t -> t.IsAbstract && t.IsClass && not t.IsSealed && not (List.isEmpty (casesOf t)))
        |> Array.map _.FullName |> Set.ofArray
    let covered = classifiers |> List.map (fst >> _.FullName) |> Set.ofList
    Assert.Equal<Set<string>>(hierarchies, covered)

[<Fact>]
let ``The patterns name every case of every hierarchy`` () =
    let misnamed =
        [ for baseType, classify in classifiers do
              for case in casesOf baseType do
                  let named =
                      try classify (instanceOf case) with
                      | :? ArgumentException as e -> e.Message
                  if named <> case.Name then yield $"{baseType.Name}.{case.Name}: the patterns say {named}" ]
    Assert.Empty misnamed
    // Not vacuous: reflection finds the cases.
    for baseType, _ in classifiers do Assert.NotEmpty(casesOf baseType)
