// A first look at the MmuSpec spec (the executable x86 page walk, SDM Vol. 3 ch. 4, and the TDP and
// shadow MMU models) from F#, through the F# layer shipped with it (spec/fsharp): total active
// patterns, curried steps, and closed types where the C# API returns null.
//
//   dotnet build MmuSpec.sln                             (Debug, or: dotnet build spec/fsharp)
//   dotnet fsi docs/explore.fsx                          (from any directory)
//   dotnet fsi --define:RELEASE docs/explore.fsx         (after a Release build)
//
// A relative #r is resolved against this script's folder. #r takes a literal path, so the build
// configuration is chosen with a define. The layer's build output holds the spec's assembly too,
// which the script names as well: F# Interactive compiles only against what #r lists.
#if RELEASE
#r "../spec/fsharp/bin/Release/net10.0/MmuSpec.Spec.dll"
#r "../spec/fsharp/bin/Release/net10.0/MmuSpec.Spec.FSharp.dll"
#else
#r "../spec/fsharp/bin/Debug/net10.0/MmuSpec.Spec.dll"
#r "../spec/fsharp/bin/Debug/net10.0/MmuSpec.Spec.FSharp.dll"
#endif

open MmuSpec.Spec.Memory
open MmuSpec.Spec.Paging
open MmuSpec.FSharp
open MmuSpec.FSharp.Patterns

// Entry flags, the same in every paging mode (SDM Tables 4-14 to 4-20).
let P, W, U = 0x1UL, 0x2UL, 0x4UL

// ---- 1. A walk (spec/GuestWalk, spec/Paging) ----
// Guest memory is an immutable value: 64 KiB of RAM at gpa 0 (one memslot of 16 frames). Every
// write returns a new memory; a read outside the memslots is None.
//
// A 4-level tree for gva 0x0000_0080_8060_4567, whose indices are
// PML4 1 (bits 47:39), PDPT 2 (38:30), PD 3 (29:21), PT 4 (20:12) and offset 0x567:
let gva = 0x0000_0080_8060_4567UL

let memory =
    Memory.ofSlots [ Memslot(0UL, 16UL) ]
    |> Memory.write 0x1008UL (0x2000UL ||| P ||| W ||| U) 8     // PML4E 1 -> PDPT at 0x2000
    |> Memory.write 0x2010UL (0x3000UL ||| P ||| W ||| U) 8     // PDPTE 2 -> PD at 0x3000
    |> Memory.write 0x3018UL (0x4000UL ||| P ||| W ||| U) 8     // PDE 3   -> PT at 0x4000
    |> Memory.write 0x4020UL (0x123000UL ||| P ||| W ||| U) 8   // PTE 4   -> 4 KiB frame 0x123000
printfn "a read outside the memslot: %A\n" (Memory.read64 0x10000UL memory)

// The controls: paging mode plus the CR0/CR4/EFER/EFLAGS/PKRU bits the walk reads.
// Optional C# parameters become named arguments; change one later with .WithCr4Smep(true) etc.
let controls = PagingControls(PagingMode.Long4, cr0Wp = true, eferNxe = true)

// Boot = MOV CR3: Booted with the machine, or Gp with the reason (here a CR3 bit above MAXPHYADDR).
match Walk.boot controls (1UL <<< 51) memory with
| Booted _ -> printfn "booted?"
| Gp reason -> printfn "MOV CR3 with bit 51 set: #GP (%O)\n" reason

let machine =
    match Walk.boot controls 0x1000UL memory with
    | Booted m -> m
    | Gp reason -> failwithf "MOV CR3 raised #GP (%O)" reason

// Walk.explain walks one access and keeps every step: the entries read, the rule that decided, and
// the A/D bits written back. Its ToString prints it all.
let explain access =
    let e = Walk.explain machine.Cpu machine.Memory access
    printfn "%O\n" e
    e

// A user write that succeeds: gpa 0x123567, A set in all four entries and D in the PTE.
let ok = explain (Access.Write(gva, Privilege.User))
printfn "PTE after the write: 0x%x (A=0x20 and D=0x40 added)\n" (Memory.read64 0x4020UL ok.MemoryAfter |> Option.get)

// The next page's PTE (index 5, at 0x4028) is empty: #PF with error code W|U (0x6), P=0. A faulting
// walk writes nothing back. The patterns are total: leave a case out and the compiler says so.
let describe result =
    match result with
    | Translated(gpa, size, rights) -> $"translated to 0x%x{gpa} ({size.Name()} page, {rights})"
    | NotPresentFault _ -> "#PF, not present"
    | PageFault(FaultBits b) -> $"#PF with P=1 (reserved bit: {b.Reserved}, protection key: {b.ProtectionKey})"
    | GeneralProtection reason -> $"#GP ({reason})"

let fault = explain (Access.Write(gva + 0x1000UL, Privilege.User))
printfn "%s\n" (describe fault.Result)

// A machine runs operations (accesses, stores, MOV CR3, control changes) in order; the helpers give
// each the base type Op, so the list needs no upcasts.
let results, _ =
    Walk.run [ Walk.access (Access.Read(gva, Privilege.User))
               Walk.writeGuest 0x4020UL 0UL 8                        // the guest clears its PTE
               Walk.access (Access.Read(gva, Privilege.User)) ] machine
for r in results do
    match r with
    | Completed -> printfn "  ok"
    | Walked w -> printfn "  %s" (describe w)
    | GpFault reason -> printfn "  #GP (%O)" reason
printfn ""

// ---- 2. A TDP fault (spec/Tdp, docs/tdp-model.md) ----
// The same guest tables, now in a memslot of a VM with EPT: guest frames 0..0x1FF backed by host
// frames from 0x80000. The first touch of a gfn is an EPT violation the MMU handles ("faulted in");
// a gpa in no memslot exits to userspace; the guest's own #PF comes back as TdpGuestFault.
open MmuSpec.Spec.Tdp

let tdpOps =
    [ Tdp.createSlot 0 0UL 0x200UL 0x80000UL PageSize.Size4K false
      Tdp.guestStore 0x1008UL (0x2000UL ||| P ||| W ||| U) 8
      Tdp.guestStore 0x2010UL (0x3000UL ||| P ||| W ||| U) 8
      Tdp.guestStore 0x3018UL (0x4000UL ||| P ||| W ||| U) 8
      Tdp.guestStore 0x4020UL (0x123000UL ||| P ||| W ||| U) 8
      Tdp.guestSetPaging (Some controls) 0x1000UL
      Tdp.guestAccess (Access.Write(gva, Privilege.User))            // faulted in: gfn 0x123
      Tdp.guestAccess (Access.Read(gva, Privilege.User))             // a hit
      Tdp.guestAccess (Access.Write(gva + 0x1000UL, Privilege.User)) // the guest's PTE 5 is empty
      Tdp.preFault 0x180000UL 0x4000UL                               // KVM_PRE_FAULT_MEMORY: 4 pages, read-faulted
      Tdp.accessGpa 0x400000UL AccessType.Read ]                     // gfn 0x400: no memslot

let tdpResults, tdpState = Tdp.run tdpOps (Tdp.create (VmConfig(TdpFormat.Ept)))
for op, result in List.zip tdpOps tdpResults do
    let what =
        match result with
        | TdpOk -> "ok"
        | TdpRejected why -> $"rejected: {why}"
        | TdpMapped(hpa, size, faulted) -> $"""{(if faulted then "EPT violation handled, " else "")}hpa 0x%x{hpa} ({size.Name()})"""
        | TdpPopulated bytes -> $"pre-faulted 0x%x{bytes} bytes"
        | TdpMmioExit gpa -> $"MMIO exit at gpa 0x%x{gpa}"
        | TdpGuestFault f -> $"the guest's own fault: {describe f}"
        | TdpDirtyLog gfns -> $"dirty gfns {gfns}"
    printfn "%-60O -> %s" op what
let leaves = [ for page in tdpState.Pages.Values do
                 for entry in page.Entries.Values do
                     match entry with
                     | LeafMapping(gfn, level, pfn, _) -> yield $"gfn 0x%x{gfn} -> pfn 0x%x{pfn} (level {level})"
                     | TableLink _ -> () ]
printfn "EPT leaves: %A\n" leaves

// ---- 3. A shadow fault (spec/Shadow, docs/shadow-model.md) ----
// The same guest tables in a VM without TDP: the MMU builds shadow pages that mirror them.
// Shadow.step is a pure function from an operation and a state to (result, state).
open MmuSpec.Spec.Shadow

let run state (op: ShadowOp) =
    let result, after = Shadow.step op state
    printfn "%-60O -> %O" op result
    after

let booted =
    [ Shadow.createSlot 0 0UL 0x200UL 0x8000UL false
      Shadow.guestStore 0x1008UL (0x2000UL ||| P ||| W ||| U) 8
      Shadow.guestStore 0x2010UL (0x3000UL ||| P ||| W ||| U) 8
      Shadow.guestStore 0x3018UL (0x4000UL ||| P ||| W ||| U) 8
      Shadow.guestStore 0x4020UL (0x123000UL ||| P ||| W ||| U) 8
      Shadow.guestSetPaging controls 0x1000UL ]
    |> List.fold run (Shadow.create (ShadowConfig 46))
// The first access is a shadow fault: the MMU walks the guest's tables and fills a shadow page per
// guest table (gfn + role) and a 4 KiB leaf; the second is a hit. An access the guest's tables do
// not allow is a guest fault, injected into the guest.
let shadowed =
    [ Shadow.guestAccess (Access.Write(gva, Privilege.User))
      Shadow.guestAccess (Access.Read(gva, Privilege.User)) ] |> List.fold run booted
for page in shadowed.Pages.Values do printfn "  %O" page
let faultOp = Shadow.guestAccess (Access.Read(gva + 0x1000UL, Privilege.User))
let faultResult, afterFault = Shadow.step faultOp shadowed
match faultResult with
| ShadowGuestFault(NotPresentFault b) -> printfn "a guest #PF (P=0, W=%b, U=%b)" b.Write b.User
| other -> printfn "%O" other
// The TLB layer (docs/shadow-model.md, "Oracle 2") judges a result: Allowed, or Violates with why.
let tlb = Shadow.tlbStart shadowed
printfn "the fault: %A" (Shadow.judge faultOp faultResult afterFault tlb)
// A translation the guest's tables never gave (its PTE 5 has been empty since the last flush):
printfn "a made-up translation instead: %A\n"
    (Shadow.judge faultOp (ShadowResult.Translated(0x124567UL, 0x8124567UL, true)) afterFault tlb)

// The guest retargets its PTE: the level-1 shadow page goes unsync instead of trapping, so the
// stale translation is served (the guest has not flushed), until INVLPG syncs the entry.
let afterEdit =
    [ Shadow.guestStore 0x4020UL (0x124000UL ||| P ||| W ||| U ||| 0x20UL) 8
      Shadow.guestAccess (Access.Read(gva, Privilege.User))
      Shadow.invlpg gva
      Shadow.guestAccess (Access.Read(gva, Privilege.User)) ] |> List.fold run shadowed
printfn "unsync pages: %d" (afterEdit.Pages.Values |> Seq.filter (fun p -> p.Unsync) |> Seq.length)
// Cached roots: a second address space (its PML4 at 0x5000 shares the PDPT) with PCIDs. A NOFLUSH
// switch away and back reuses the cached root; an INVPCID of the first PCID while the other runs
// makes the kept root "unsync" (the keep-unsync-prev-roots proposal, Lai Jiangshan, 2021), so the
// switch back syncs it before use.
let pcids =
    [ Shadow.guestStore 0x5008UL (0x2000UL ||| P ||| W ||| U) 8
      Shadow.guestSetPagingPcide controls 0x1001UL                 // CR4.PCIDE, PCID 1
      Shadow.guestAccess (Access.Read(gva, Privilege.User))
      Shadow.movCr3 (0x5002UL ||| Shadow.noFlush)                  // PCID 2, keep PCID 1's TLB
      Shadow.guestStore 0x4020UL (0x125000UL ||| P ||| W ||| U ||| 0x20UL) 8
      Shadow.invpcid ShadowOp.Invpcid.SingleContext 1UL 0UL ] |> List.fold run afterEdit
printfn "roots: %O" pcids.Roots
let back = run pcids (Shadow.movCr3 (0x1001UL ||| Shadow.noFlush))
printfn "roots: %O" back.Roots
run back (Shadow.guestAccess (Access.Read(gva, Privilege.User))) |> ignore
