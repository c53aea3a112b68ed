/// The EPT walk and the 2D walk used from F# (spec/fsharp/Ept.fs): total patterns, options, curried steps.
module MmuSpec.FSharp.EptTests

open Xunit
open MmuSpec.Spec.Memory
open MmuSpec.Spec.Paging
open MmuSpec.Spec.Ept
open MmuSpec.FSharp
open MmuSpec.FSharp.Ept

// EPT bits (SDM Vol. 3C §29.3.2): R, W, X; WB in bits 5:3 of a leaf.
let private rwx, wb = 0x7UL, 0x30UL
let private caps = EptCapabilities.Default
let private eptp = EptPointer.Create 0x1000UL

/// L1: an EPT mapping L2 gpa 0x1000 (L2's PML4) .. 0x4000 (its PT) to L1 0x11000 .. 0x14000 and L2 gpa
/// 0x12_3000 to L1 0x1f000; L2's 4-level tree maps gva 0x80_8060_4567 to L2 gpa 0x12_3567.
let private l1 dataEpt =
    Memory.ofSlots [ Memslot(0UL, 32UL) ]
    |> Memory.write 0x1000UL (0x2000UL ||| rwx) 8
    |> Memory.write 0x2000UL (0x3000UL ||| rwx) 8
    |> Memory.write 0x3000UL (0x4000UL ||| rwx) 8
    |> Memory.write 0x4008UL (0x11000UL ||| rwx ||| wb) 8
    |> Memory.write 0x4010UL (0x12000UL ||| rwx ||| wb) 8
    |> Memory.write 0x4018UL (0x13000UL ||| rwx ||| wb) 8
    |> Memory.write 0x4020UL (0x14000UL ||| rwx ||| wb) 8
    |> Memory.write 0x4918UL (0x1f000UL ||| dataEpt) 8
    |> Memory.write 0x11008UL 0x2007UL 8
    |> Memory.write 0x12010UL 0x3007UL 8
    |> Memory.write 0x13018UL 0x4007UL 8
    |> Memory.write 0x14020UL 0x123007UL 8

let private l2 = Some(CpuState(PagingControls(PagingMode.Long4), 0x1000UL))
let private gva = 0x80_8060_4567UL

[<Fact>]
let ``A 2D walk from F#: translated, then a write violation on the final access`` () =
    match l1 (rwx ||| wb) |> Ept.nested caps eptp l2 (Access.Read gva) with
    | NestedTranslated(l2Gpa, EptTranslated(l1Gpa, size, _)), _ -> Assert.Equal((0x12_3567UL, 0x1f567UL, PageSize.Size4K), (l2Gpa, l1Gpa, size))
    | other, _ -> failwith $"expected a translation, got {other}"
    // Read-only data page: the exit qualification has write (bit 1), R (bit 3), GLA valid (7), final access (8).
    match l1 (0x1UL ||| wb) |> Ept.nested caps eptp l2 (Access.Write gva) with
    | NestedEptExit(EptViolation(q, gpa)), _ -> Assert.Equal((0x18aUL, 0x12_3567UL), (q.Raw, gpa))
    | other, _ -> failwith $"expected an EPT violation, got {other}"

[<Fact>]
let ``EPTP problems are options`` () =
    Assert.Equal(None, Ept.pointerProblem caps eptp)
    Assert.Equal(Some EptPointerProblem.MemoryType, Ept.pointerProblem caps (EptPointer 0x1019UL))
