// A first look at the MmuSpec spec (the executable x86 page walk, SDM Vol. 3 ch. 4) from F#.
//
//   dotnet build MmuSpec.sln          (or: dotnet build spec)
//   dotnet fsi docs/explore.fsx       (from the repo root)
//
// A relative #r is resolved against this script's folder, so this works from any directory.
#r "../spec/bin/Debug/net10.0/MmuSpec.Spec.dll"

open MmuSpec.Spec.Memory
open MmuSpec.Spec.Paging
open MmuSpec.Spec.GuestWalk

// Entry flags, the same in every paging mode (SDM Tables 4-14 to 4-20).
let P, W, U = 0x1UL, 0x2UL, 0x4UL

// Guest memory is an immutable value: 64 KiB of RAM at gpa 0 (one memslot of 16 frames).
// Every Write64 returns a new memory; a gpa outside the memslots reads as null.
//
// A 4-level tree for gva 0x0000_0080_8060_4567, whose indices are
// PML4 1 (bits 47:39), PDPT 2 (38:30), PD 3 (29:21), PT 4 (20:12) and offset 0x567:
let gva = 0x0000_0080_8060_4567UL

let memory =
    GuestMemory.FromSlots([ Memslot(0UL, 16UL) ])
        .Write64(0x1008UL, 0x2000UL ||| P ||| W ||| U)     // PML4E 1 -> PDPT at 0x2000
        .Write64(0x2010UL, 0x3000UL ||| P ||| W ||| U)     // PDPTE 2 -> PD at 0x3000
        .Write64(0x3018UL, 0x4000UL ||| P ||| W ||| U)     // PDE 3   -> PT at 0x4000
        .Write64(0x4020UL, 0x123000UL ||| P ||| W ||| U)   // PTE 4   -> 4 KiB frame 0x123000

// The controls: paging mode plus the CR0/CR4/EFER/EFLAGS/PKRU bits the walk reads.
// Optional C# parameters become named arguments; change one later with .WithCr4Smep(true) etc.
let controls = PagingControls(PagingMode.Long4, cr0Wp = true, eferNxe = true)

// Boot = MOV CR3: it returns null when the load would raise #GP (a reserved CR3 bit, or in PAE
// a bad PDPTE), so check before use.
let machine =
    match GuestMachine.Boot(controls, 0x1000UL, memory) with
    | null -> failwith "MOV CR3 raised #GP"
    | m -> m

// Explain walks one access and keeps every step: the entries read, the rule that decided, and
// the A/D bits written back. Its ToString prints it all.
let explain access =
    let e = PageWalk.Explain(machine.Cpu, machine.Memory, access)
    printfn "%O\n" e
    e

// 1. A user write that succeeds: gpa 0x123567, A set in all four entries and D in the PTE.
let ok = explain (Access.Write(gva, Privilege.User))
printfn "PTE after the write: 0x%x (A=0x20 and D=0x40 added)\n" (ok.MemoryAfter.Read64(0x4020UL).Value)

// 2. The next page's PTE (index 5, at 0x4028) is empty: #PF with error code W|U (0x6), P=0.
//    A faulting walk writes nothing back.
let fault = explain (Access.Write(gva + 0x1000UL, Privilege.User))

// Results are a small C# record hierarchy; from F# match them with type tests (the F# test
// project has active patterns for this: MmuSpec.FSharp.Patterns).
match fault.Result with
| :? WalkResult.Translated as t -> printfn "translated to 0x%x" t.Gpa
| :? WalkResult.PageFault as pf -> printfn "page fault, error code %s" (pf.ErrorCode.Describe())
| other -> printfn "%O" other

// ---- The shadow MMU model (docs/shadow-model.md) ----
// The same guest tables, now in a memslot of a VM without TDP: the MMU builds shadow pages that
// mirror them. ShadowState.Step is a pure function from an operation to (state, result).
open MmuSpec.Spec.Shadow

let run (state: ShadowState) (op: ShadowOp) =
    let stepped = state.Step(op)
    printfn "%-60O -> %O" op stepped.Result
    stepped.State

let guestTables =
    [ ShadowOp.CreateSlot(0, 0UL, 0x200UL, 0x8000UL, false) :> ShadowOp
      ShadowOp.GuestStore(0x1008UL, 0x2000UL ||| P ||| W ||| U, 8)
      ShadowOp.GuestStore(0x2010UL, 0x3000UL ||| P ||| W ||| U, 8)
      ShadowOp.GuestStore(0x3018UL, 0x4000UL ||| P ||| W ||| U, 8)
      ShadowOp.GuestStore(0x4020UL, 0x123000UL ||| P ||| W ||| U, 8)
      ShadowOp.GuestSetPaging(controls, 0x1000UL) ]

let booted = guestTables |> List.fold run (ShadowState.Create(ShadowConfig(46)))
// 3. The first access faults in a shadow page per guest table (gfn + role) and a 4 KiB leaf;
//    the second is a hit: the hardware walked the shadow tables.
let shadowed = [ ShadowOp.GuestAccess(Access.Write(gva, Privilege.User)) :> ShadowOp
                 ShadowOp.GuestAccess(Access.Read(gva, Privilege.User)) ] |> List.fold run booted
for page in shadowed.Pages.Values do printfn "  %O" page
// 4. The guest retargets its PTE: the level-1 shadow page goes unsync instead of trapping, so the
//    stale translation is served (the guest has not flushed), until INVLPG syncs the entry.
let afterEdit =
    [ ShadowOp.GuestStore(0x4020UL, 0x124000UL ||| P ||| W ||| U ||| 0x20UL, 8) :> ShadowOp
      ShadowOp.GuestAccess(Access.Read(gva, Privilege.User))
      ShadowOp.Invlpg(gva)
      ShadowOp.GuestAccess(Access.Read(gva, Privilege.User)) ] |> List.fold run shadowed
printfn "unsync pages: %d" (afterEdit.Pages.Values |> Seq.filter (fun p -> p.Unsync) |> Seq.length)
// 5. Cached roots: a second address space (its PML4 at 0x5000 shares the PDPT) with PCIDs. A
//    NOFLUSH switch away and back reuses the cached root; an INVPCID of the first PCID while the other
//    runs makes the kept root "unsync" (the keep-unsync-prev-roots proposal, Lai Jiangshan, 2021), so the
//    switch back syncs it before use.
let pcids =
    [ ShadowOp.GuestStore(0x5008UL, 0x2000UL ||| P ||| W ||| U, 8) :> ShadowOp
      ShadowOp.GuestSetPaging(controls, 0x1001UL, true)                 // CR4.PCIDE, PCID 1
      ShadowOp.GuestAccess(Access.Read(gva, Privilege.User))
      ShadowOp.GuestMovCr3(0x5002UL ||| ShadowOp.GuestMovCr3.NoFlush)  // PCID 2, keep PCID 1's TLB
      ShadowOp.GuestStore(0x4020UL, 0x125000UL ||| P ||| W ||| U ||| 0x20UL, 8)
      ShadowOp.Invpcid(ShadowOp.Invpcid.SingleContext, 1UL, 0UL) ] |> List.fold run afterEdit
printfn "roots: %O" pcids.Roots
let back = run pcids (ShadowOp.GuestMovCr3(0x1001UL ||| ShadowOp.GuestMovCr3.NoFlush))
printfn "roots: %O" back.Roots
run back (ShadowOp.GuestAccess(Access.Read(gva, Privilege.User))) |> ignore
