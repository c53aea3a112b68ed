/// Properties of the spec's page walk (SDM Vol. 3 ch. 4), checked with FsCheck on small page-table
/// trees built by hand: one path of entries from CR3 down to a leaf, in any of the four modes. They
/// use the spec through its F# layer (spec/fsharp: patterns, Walk/Tdp/Shadow steps).
///
/// Each property is an FsCheck.Xunit [<Property>] whose argument is drawn from the Arbitrary its
/// attribute names (one class per kind of scenario, below: they all generate a Scenario). Every
/// property runs 300 cases, or MMUSPEC_MAX_TEST (module attribute, Running.fs). A failure prints
/// FsCheck's "Replay directly at failing step with (seed,gamma,size)"; rerun that one case with
/// MMUSPEC_REPLAY=seed,gamma,size dotnet test --filter "DisplayName~<property>", or paste it into
/// the attribute as Replay = "seed,gamma,size".
[<MmuSpec.FSharp.Running.PropertiesFromEnvironment(300)>]
module MmuSpec.FSharp.SpecProperties

open System
open Xunit
open FsCheck.Xunit
open FsCheck
open FsCheck.FSharp
open MmuSpec.Spec.Memory
open MmuSpec.Spec.Paging
open MmuSpec.Spec.GuestWalk
open MmuSpec.FSharp.Patterns

// ---------------------------------------------------------------------------------------------
// Entry bits as the SDM lays them out (Tables 4-4 to 4-20), written out here rather than taken
// from the spec, so that the properties do not trust the code they check.
// ---------------------------------------------------------------------------------------------

let private P, W, U, A, D, PS = 0x1UL, 0x2UL, 0x4UL, 0x20UL, 0x40UL, 0x80UL
let private XD = 1UL <<< 63

let private isLong (mode: PagingMode) = mode = PagingMode.Long4 || mode = PagingMode.Long5

/// The root level: 2 (32-bit), 3 (PAE's PDPT), 4 (PML4) or 5 (PML5).
let private rootLevel (mode: PagingMode) =
    match mode with
    | PagingMode.Bits32 -> 2
    | PagingMode.Pae -> 3
    | PagingMode.Long4 -> 4
    | _ -> 5

/// Linear-address width (SDM §3.3.7.1, §4.1.1).
let private linearBits (mode: PagingMode) =
    match mode with
    | PagingMode.Long4 -> 48
    | PagingMode.Long5 -> 57
    | _ -> 32

/// The index of a level's entry in its table (SDM §4.3, §4.4.2, §4.5).
let private index (mode: PagingMode) level (gva: uint64) =
    match mode with
    | PagingMode.Bits32 -> (gva >>> (12 + 10 * (level - 1))) &&& 0x3FFUL
    | PagingMode.Pae when level = 3 -> (gva >>> 30) &&& 0x3UL
    | _ -> (gva >>> (12 + 9 * (level - 1))) &&& 0x1FFUL

/// The size of the page an entry maps at a level: 4 KiB, 4 MiB or 2 MiB, 1 GiB.
let private pageBytes (mode: PagingMode) level =
    match level with
    | 1 -> 0x1000UL
    | 2 when mode = PagingMode.Bits32 -> 0x400000UL
    | 2 -> 0x200000UL
    | _ -> 0x40000000UL

let private entryName level =
    match level with
    | 1 -> "PTE"
    | 2 -> "PDE"
    | 3 -> "PDPTE"
    | 4 -> "PML4E"
    | _ -> "PML5E"

// ---------------------------------------------------------------------------------------------
// Scenarios: 64 KiB of guest RAM at gpa 0; the table of level k sits at page (root - k + 1), so the
// root is at 0x1000 and every level has its own page. One path of entries leads to a leaf.
// ---------------------------------------------------------------------------------------------

let private ram = [ Memslot(0UL, 16UL) ]

let private tableGpa root level = 0x1000UL * uint64 (root - level + 1)

type Entry =
    { Level: int
      /// Where the entry lives in guest memory.
      Gpa: uint64
      /// Its raw contents (4 bytes in 32-bit paging, else 8).
      Value: uint64
      /// PAE's PDPTE: loaded into a register by MOV CR3, never read or written by a walk.
      IsPdpteRegister: bool }

[<StructuredFormatDisplay("{Show}")>]
type Scenario =
    { Controls: PagingControls
      Cr3: uint64
      Access: Access
      /// Root first, down to the leaf (entries below a not-present one are written all the same).
      Path: Entry list
      /// The frame written in the leaf, and the size of the page it maps.
      Frame: uint64
      PageBytes: uint64
      Memory: GuestMemory }

    member s.Mode = s.Controls.Mode
    member s.EntryBytes = if s.Mode = PagingMode.Bits32 then 4 else 8
    /// Entries the walk reads from memory (all but PAE's PDPTE register).
    member s.WalkedEntries = s.Path |> List.filter (fun e -> not e.IsPdpteRegister)
    member s.Leaf = List.last s.Path

    member s.Show =
        let entries =
            s.Path |> List.map (fun e -> sprintf "    %-5s @ 0x%x = 0x%x" (entryName e.Level) e.Gpa e.Value)
        String.Join("\n", [ sprintf "%O, CR3=0x%x" s.Controls s.Cr3; sprintf "    %O" s.Access ] @ entries)

    override s.ToString() = s.Show

/// Writes each entry of the path into memory.
let private layOut (s: Scenario) =
    { s with Memory = s.Path |> List.fold (fun (m: GuestMemory) e -> m.Write(e.Gpa, e.Value, s.EntryBytes)) s.Memory }

/// The same scenario with every entry's value passed through f.
let private rewrite (f: Entry -> uint64) (s: Scenario) =
    layOut { s with Path = s.Path |> List.map (fun e -> { e with Value = f e }) }

type private Shape =
    { Modes: PagingMode list
      Types: AccessType list
      /// Every entry present, no reserved bit set.
      Clean: bool }

let private anyShape =
    { Modes = [ PagingMode.Bits32; PagingMode.Pae; PagingMode.Long4; PagingMode.Long5 ]
      Types = [ AccessType.Read; AccessType.Write; AccessType.Fetch ]
      Clean = false }

let private longShape = { anyShape with Modes = [ PagingMode.Long4; PagingMode.Long5 ] }

/// true with probability 1/n.
let private oneIn n = Gen.frequency [ (n - 1, Gen.constant false); (1, Gen.constant true) ]
let private bool = Gen.elements [ false; true ]

let private genU64 =
    Gen.map4
        (fun a b c d -> (uint64 a <<< 48) ||| (uint64 b <<< 32) ||| (uint64 c <<< 16) ||| uint64 d)
        (Gen.choose (0, 0xFFFF)) (Gen.choose (0, 0xFFFF)) (Gen.choose (0, 0xFFFF)) (Gen.choose (0, 0xFFFF))

let private genControls mode =
    gen {
        let! wp = bool
        let! pse = bool
        let! smep = bool
        let! smap = bool
        let! pke = bool
        let! nxe = bool
        let! ac = bool
        let! pkru = Gen.oneof [ Gen.constant 0u; genU64 |> Gen.map uint32 ]
        return
            PagingControls(
                mode, cr0Wp = wp, cr4Pse = pse, cr4Smep = smep, cr4Smap = smap,
                cr4Pke = pke, eferNxe = nxe, eflagsAc = ac, pkru = pkru)
    }

let private genAccess gva types =
    gen {
        let! t = Gen.elements types
        let! who =
            if t = AccessType.Fetch then Gen.elements [ Privilege.Supervisor; Privilege.User ]
            else Gen.elements [ Privilege.Supervisor; Privilege.User; Privilege.ImplicitSupervisor ]
        return Access(gva, t, who)
    }

/// Bits that are reserved (with MAXPHYADDR 46, the default) where the noise is put; none of them is
/// an address bit, so a noisy entry either faults or maps the same frame.
let private noiseBits (mode: PagingMode) level largeLeaf =
    match mode with
    | PagingMode.Bits32 -> if largeLeaf then [ 1UL <<< 21 ] else []                 // Table 4-4: 4 MiB PDE bit 21
    | PagingMode.Pae -> [ 1UL <<< 62; 1UL <<< 50 ] @ (if largeLeaf then [ 1UL <<< 13 ] else [])   // 62:M; 2 MiB 20:13
    | _ ->
        [ 1UL <<< 51 ]                                                               // 51:M
        @ (if level >= 4 then [ PS ] else [])                                        // PS in PML4E/PML5E
        @ (if largeLeaf then [ 1UL <<< 13 ] else [])                                 // 2 MiB 20:13, 1 GiB 29:13

let private genEntry (shape: Shape) (c: PagingControls) root leaf gva frame pkey level =
    gen {
        let mode = c.Mode
        let bytes = if mode = PagingMode.Bits32 then 4UL else 8UL
        let gpa = tableGpa root level + bytes * index mode level gva
        let target = if level = leaf then frame else tableGpa root (level - 1)
        if mode = PagingMode.Pae && level = 3 then
            // A PDPTE has only P and the address (bits 2:1 and 8:5 are reserved, Table 4-8).
            let! present = if shape.Clean then Gen.constant true else oneIn 16 |> Gen.map not
            return { Level = level; Gpa = gpa; Value = target ||| (if present then P else 0UL); IsPdpteRegister = true }
        else
            let isLeaf = level = leaf
            let! present = if shape.Clean then Gen.constant true else oneIn 16 |> Gen.map not
            let! w = oneIn 4 |> Gen.map not
            let! u = oneIn 4 |> Gen.map not
            // XD is a rights bit with EFER.NXE=1 and a reserved bit without it (so rarer then).
            let! xd =
                if mode = PagingMode.Bits32 then Gen.constant false
                elif c.EferNxe then oneIn 4
                elif shape.Clean then Gen.constant false
                else oneIn 20
            let! a = bool
            let! d = if isLeaf then bool else Gen.constant false
            let candidates = noiseBits mode level (isLeaf && level > 1)
            let! noise =
                if shape.Clean || List.isEmpty candidates then Gen.constant 0UL
                else Gen.frequency [ (15, Gen.constant 0UL); (1, Gen.elements candidates) ]
            let flag b bit = if b then bit else 0UL
            let value =
                target ||| flag present P ||| flag w W ||| flag u U ||| flag xd XD ||| flag a A ||| flag d D
                ||| flag (isLeaf && level > 1) PS
                ||| (if isLeaf && isLong mode then uint64 pkey <<< 59 else 0UL)
                ||| noise
            return { Level = level; Gpa = gpa; Value = value; IsPdpteRegister = false }
    }

let private genScenario (shape: Shape) =
    gen {
        let! mode = Gen.elements shape.Modes
        let! c = genControls mode
        let root = rootLevel mode
        let! leaf =
            match mode with
            | PagingMode.Bits32 -> Gen.elements (if c.Cr4Pse then [ 1; 2 ] else [ 1 ])
            | PagingMode.Pae -> Gen.elements [ 1; 2 ]
            | _ -> Gen.elements [ 1; 2; 3 ]
        let! raw = genU64
        let width = linearBits mode
        // Canonical in IA-32e paging (bits 63:width-1 equal), a 32-bit address otherwise.
        let gva =
            if isLong mode then uint64 ((int64 (raw <<< (64 - width))) >>> (64 - width))
            else raw &&& 0xFFFFFFFFUL
        let size = pageBytes mode leaf
        // Frames below 4 GiB outside IA-32e paging, below 64 GiB (< MAXPHYADDR) inside it.
        let top = if isLong mode then 0x1000000000UL else 0x100000000UL
        let! page = Gen.choose (0, int (top / size) - 1)
        let frame = uint64 page * size
        let! pkey = Gen.choose (0, 15)
        let! path = [ root .. -1 .. leaf ] |> Gen.collectToList (genEntry shape c root leaf gva frame pkey)
        let! access = genAccess gva shape.Types
        let cr3 = tableGpa root root
        return
            layOut
                { Controls = c; Cr3 = cr3; Access = access; Path = path
                  Frame = frame; PageBytes = size; Memory = GuestMemory.FromSlots ram }
    }

/// A clean scenario with U/S cleared in one walked entry, accessed from user mode.
let private genUserWithoutUs =
    gen {
        let! s = genScenario { anyShape with Clean = true }
        let! level = s.WalkedEntries |> List.map _.Level |> Gen.elements
        let! t = Gen.elements [ AccessType.Read; AccessType.Write; AccessType.Fetch ]
        let s = rewrite (fun e -> if e.Level = level && not e.IsPdpteRegister then e.Value &&& ~~~U else e.Value) s
        return { s with Access = Access(s.Access.Gva, t, Privilege.User) }
    }

/// An IA-32e scenario whose address has one bit above the linear-address width flipped.
let private genNonCanonical =
    gen {
        let! s = genScenario longShape
        let! bit = Gen.choose (linearBits s.Mode - 1, 63)
        return { s with Access = s.Access.WithGva(s.Access.Gva ^^^ (1UL <<< bit)) }
    }

// The Arbitrary instances the properties name (FsCheck.Xunit's Arbitrary = [| typeof<...> |]): all
// generate a Scenario, each of its own kind, so a property names the kind it is about. None
// shrinks: a scenario is one path whose entries depend on each other.

/// Any mode, any access, entries possibly not present or with a reserved bit.
type AnyScenario = static member Scenario() = Arb.fromGen (genScenario anyShape)
/// As AnyScenario, writes only.
type WriteScenario = static member Scenario() = Arb.fromGen (genScenario { anyShape with Types = [ AccessType.Write ] })
/// As AnyScenario, reads and fetches only.
type ReadOrFetchScenario =
    static member Scenario() = Arb.fromGen (genScenario { anyShape with Types = [ AccessType.Read; AccessType.Fetch ] })
/// A clean walk with U/S cleared at one level, accessed from user mode.
type UserWithoutUsScenario = static member Scenario() = Arb.fromGen genUserWithoutUs
/// 4- or 5-level paging, with an address made non-canonical.
type NonCanonicalScenario = static member Scenario() = Arb.fromGen genNonCanonical
/// 4- or 5-level paging, any access.
type LongScenario = static member Scenario() = Arb.fromGen (genScenario longShape)
/// 4- or 5-level paging, clean entries, reads and writes.
type CleanLongDataScenario =
    static member Scenario() =
        Arb.fromGen (genScenario { longShape with Clean = true; Types = [ AccessType.Read; AccessType.Write ] })
/// PAE paging, clean entries.
type CleanPaeScenario = static member Scenario() = Arb.fromGen (genScenario { anyShape with Modes = [ PagingMode.Pae ]; Clean = true })

// ---------------------------------------------------------------------------------------------
// Running the spec on a scenario.
// ---------------------------------------------------------------------------------------------

/// MOV CR3 then the CPU state; the generator never writes a PDPTE with reserved bits.
let private cpuOf (s: Scenario) =
    match Walk.loadCr3 s.Controls s.Cr3 s.Memory with
    | Booted cpu -> cpu
    | Gp reason -> failwithf "MOV CR3 raised #GP (%O) for\n%s" reason s.Show

let private walkWith (s: Scenario) (memory: GuestMemory) = Walk.translate (cpuOf s) memory s.Access

let private walk (s: Scenario) = walkWith s s.Memory

/// Every non-zero qword of memory, to compare two memories.
let private contents (m: GuestMemory) = [ for kv in m.Written -> kv.Key, kv.Value ]

let private entryIn (m: GuestMemory) bytes (e: Entry) = Memory.read e.Gpa bytes m |> Option.get

let private isSet bit value = value &&& bit = bit

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

// SDM §4.3, §4.4.2, §4.5.4: the final physical address is the leaf's frame plus the low bits of
// the linear address (12, 21, 22 or 30 of them).
[<Property(Arbitrary = [| typeof<AnyScenario> |])>]
let ``A translated gpa is the leaf's frame plus the gva's offset within a page of the leaf's size`` (s: Scenario) =
    match walk s with
    | Translated(gpa, size, _), _ ->
        uint64 size = s.PageBytes && gpa = (s.Frame ||| (s.Access.Gva &&& (s.PageBytes - 1UL)))
    | (PageFault _ | GeneralProtection _), _ -> true

// SDM §4.8 sets A/D only for translations used by an access; the spec (like KVM's
// walk_addr_generic) writes nothing on a faulting walk.
[<Property(Arbitrary = [| typeof<AnyScenario> |])>]
let ``A faulting walk changes no memory, so the leaf's A and D bits stay as they were`` (s: Scenario) =
    match walk s with
    | Translated _, _ -> true
    | (PageFault _ | GeneralProtection _), after -> contents after = contents s.Memory

// SDM §4.8: every paging-structure entry used gets A; the entry that maps the page gets D on a
// write. PAE's PDPTEs have no A bit and live in registers, so the PDPT is untouched.
[<Property(Arbitrary = [| typeof<WriteScenario> |])>]
let ``A successful write sets A on every entry used and D on the leaf`` (s: Scenario) =
    match walk s with
    | Translated _, after ->
        let now = entryIn after s.EntryBytes
        (s.WalkedEntries |> List.forall (now >> isSet A))
        && isSet D (now s.Leaf)
        && (s.Path |> List.filter _.IsPdpteRegister |> List.forall (fun e -> now e = e.Value))
    | _ -> true

// SDM §4.8: D is set only "whenever there is a write to a linear address".
[<Property(Arbitrary = [| typeof<ReadOrFetchScenario> |])>]
let ``Reads and fetches never change a D bit`` (s: Scenario) =
    let _, after = walk s
    s.Path |> List.forall (fun e -> (entryIn after s.EntryBytes e &&& D) = (e.Value &&& D))

// SDM §4.6: an address is a user-mode address only if U/S=1 in every paging-structure entry
// controlling it; user-mode accesses to supervisor-mode addresses are never allowed (§4.6.1), and
// the fault is a protection fault: P=1, U/S=1 in the error code (§4.7).
[<Property(Arbitrary = [| typeof<UserWithoutUsScenario> |])>]
let ``Clearing U/S at any level makes every user access fault with P=1 and U=1`` (s: Scenario) =
    match walk s with
    | PageFault(FaultBits b), _ -> b.Present && b.User && not b.Reserved && not b.ProtectionKey
    | _ -> false

// SDM §3.3.7.1 / §4.5: in IA-32e mode a linear address whose bits 63:47 (63:56 with 5-level
// paging) are not all equal is non-canonical; using it is #GP, never #PF, whatever the tables hold.
[<Property(Arbitrary = [| typeof<NonCanonicalScenario> |])>]
let ``A non-canonical address is always #GP in IA-32e paging and writes nothing`` (s: Scenario) =
    match walk s with
    | GeneralProtection GpReason.NonCanonical, after -> contents after = contents s.Memory
    | _ -> false

// SDM §4.8: A and D are sticky flags the processor only sets, so the second identical access
// sees the same tables (up to A/D) and has nothing left to write.
[<Property(Arbitrary = [| typeof<AnyScenario> |])>]
let ``Walking twice gives the same result and the second walk writes nothing`` (s: Scenario) =
    let first, once = walk s
    let second, twice = walkWith s once
    first = second && contents twice = contents once

// SDM §4.7, Figure 4-12: W/R is 1 for a write, U/S is 1 for a user-mode access (not an implicit
// supervisor access), I/D is 1 for a fetch only when CR4.SMEP=1 or (PAE/IA-32e and EFER.NXE=1).
[<Property(Arbitrary = [| typeof<AnyScenario> |])>]
let ``The error code's W, U and I/D bits describe the access`` (s: Scenario) =
    match walk s with
    | PageFault(FaultBits b), _ ->
        let c = s.Controls
        let fetch = s.Access.Type = AccessType.Fetch
        b.Write = (s.Access.Type = AccessType.Write)
        && b.User = (s.Access.Privilege = Privilege.User)
        && b.Fetch = (fetch && (c.Cr4Smep || (c.Mode <> PagingMode.Bits32 && c.EferNxe)))
    | _ -> true

// SDM §4.6.2: protection keys govern only data accesses to user-mode addresses; instruction
// fetches and supervisor-mode addresses are never checked against PKRU.
[<Property(Arbitrary = [| typeof<LongScenario> |])>]
let ``PKRU changes nothing for fetches and for supervisor-mode addresses`` (s: Scenario) =
    let supervisorAddress = s.WalkedEntries |> List.exists (fun e -> not (isSet U e.Value))
    let withPkru pkru = fst (walk { s with Controls = s.Controls.WithCr4Pke(true).WithPkru(pkru) })
    let exempt = s.Access.Type = AccessType.Fetch || supervisorAddress
    not exempt || withPkru 0u = withPkru UInt32.MaxValue

// SDM §4.6.2: with AD=1 for a key, no data access to a user-mode address with that key is
// allowed, whoever makes it; the fault sets PK (and P) in the error code (§4.7).
[<Property(Arbitrary = [| typeof<CleanLongDataScenario> |])>]
let ``With AD set for every key, a complete data walk to a user-mode address faults with PK`` (s: Scenario) =
    let s = { s with Controls = s.Controls.WithCr4Pke(true).WithPkru(0x55555555u) }
    let userAddress = s.WalkedEntries |> List.forall (fun e -> isSet U e.Value)
    match walk s with
    | PageFault(FaultBits b), _ when userAddress -> b.Present && b.ProtectionKey && not b.Reserved
    | _ when userAddress -> false
    | _ -> true

// SDM §4.4.1: PAE paging uses the four PDPTE registers loaded by MOV CR3; a later write to the
// PDPT in memory changes nothing until CR3 is loaded again.
[<Property(Arbitrary = [| typeof<CleanPaeScenario> |])>]
let ``PAE ignores a write to the PDPT until CR3 is reloaded`` (s: Scenario) =
    let access = Walk.access s.Access
    match Walk.boot s.Controls s.Cr3 s.Memory with
    | Gp reason -> failwithf "MOV CR3 raised #GP (%O) for\n%s" reason s.Show
    | Booted machine ->
        match Walk.run [ access; Walk.writeGuest s.Path.Head.Gpa 0UL 8; access; Walk.movCr3 s.Cr3; access ] machine with
        | [ Walked before; Completed; Walked after; Completed; Walked(NotPresentFault _) ], _ -> before = after
        | _ -> false

// ---- the TDP MMU model, from F# ----

module TdpFromFSharp =
    open MmuSpec.Spec.Tdp
    open MmuSpec.FSharp.Patterns

    let private slot = Tdp.createSlot 0 0x40000UL 0x40000UL 0x80000UL PageSize.Size1G false

    let private run (ops: TdpOp list) = Tdp.run ops (Tdp.create (VmConfig(TdpFormat.Ept))) |> snd

    /// An access to the slot above: its page within the slot, the offset in the page, the largest
    /// page size allowed, and the access type.
    type SlotAccess = { Page: uint64; Offset: uint64; MaxSize: PageSize; Type: AccessType }

    type SlotAccesses =
        static member SlotAccess() =
            gen {
                let! page = Gen.choose (0, 0x3FFFF)
                let! offset = Gen.choose (0, 0xFFF)
                let! size = Gen.elements [ PageSize.Size4K; PageSize.Size2M; PageSize.Size1G ]
                let! t = Gen.elements [ AccessType.Read; AccessType.Write; AccessType.Fetch ]
                return { Page = uint64 page; Offset = uint64 offset; MaxSize = size; Type = t }
            }
            |> Arb.fromGen

    /// Inside a slot, every access is mapped to the slot's host frame for its gfn, whatever the policy.
    [<Property(Arbitrary = [| typeof<SlotAccesses> |])>]
    let ``A TDP access inside a slot reaches the slot's host frame for the gfn`` (a: SlotAccess) =
        let state = run [ slot; Tdp.setMaxPageSize a.MaxSize ]
        let gpa = ((0x40000UL + a.Page) <<< 12) ||| a.Offset
        match Tdp.step (Tdp.accessGpa gpa a.Type) state |> fst with
        | TdpMapped(hpa, mapped, faulted) -> hpa = (((0x80000UL + a.Page) <<< 12) ||| a.Offset) && mapped = a.MaxSize && faulted
        | _ -> false

// ---- the shadow MMU model, from F# ----

module ShadowFromFSharp =
    open MmuSpec.Spec.Shadow
    open MmuSpec.FSharp.Patterns

    let private pwua = 0x27UL   // P, R/W, U/S, A

    /// A 4-level guest whose one path maps gva 0 to data gfn 0x400: the first read fills the shadow
    /// tables (a level-1 leaf for gfn 0x400), the second is served by them.
    [<Fact>]
    let ``A shadow fill is followed by a hit on the same leaf`` () =
        let controls = PagingControls(PagingMode.Long4, maxPhyAddr = 46)
        let ops: ShadowOp list =
            [ ShadowOp.CreateSlot(0, 0x100UL, 16UL, 0x5000UL, false)
              ShadowOp.CreateSlot(1, 0x400UL, 16UL, 0x8000UL, false)
              ShadowOp.GuestStore(0x100000UL, 0x101000UL ||| pwua, 8)
              ShadowOp.GuestStore(0x101000UL, 0x102000UL ||| pwua, 8)
              ShadowOp.GuestStore(0x102000UL, 0x103000UL ||| pwua, 8)
              ShadowOp.GuestStore(0x103000UL, 0x400000UL ||| pwua ||| 0x40UL, 8)
              ShadowOp.GuestSetPaging(controls, 0x100000UL)
              ShadowOp.GuestAccess(Access.Read(0x10UL))
              ShadowOp.GuestAccess(Access.Read(0x10UL)) ]
        let results, state = Shadow.run ops (Shadow.create (ShadowConfig 46))
        for op in ops do
            match op with
            | ShadowGuestStore(_, _, size) -> Assert.Equal(8, size)
            | ShadowHostOp(ShadowCreateSlot(id, _, _, _, readOnly)) -> Assert.True(id < 2 && not readOnly)
            | _ -> ()
        match results.[7], results.[8] with
        | ShadowTranslated(gpa, hpa, true), ShadowTranslated(gpa2, hpa2, false) ->
            Assert.Equal(0x400010UL, gpa); Assert.Equal(0x8000010UL, hpa); Assert.Equal(gpa, gpa2); Assert.Equal(hpa, hpa2)
        | other -> failwithf "unexpected results %A" other
        let leaves =
            [ for page in state.Pages.Values do
                  for entry in page.Entries.Values do
                      match entry with
                      | ShadowLeaf(gfn, pfn, _, _) -> yield gfn, pfn
                      | ShadowTableLink _ -> () ]
        Assert.Equal<(uint64 * uint64) list>([ 0x400UL, 0x8000UL ], leaves)

    /// Two address spaces with PCIDs: a NOFLUSH switch away and back reuses the cached root (the
    /// second read is a hit), and the cached roots list the two pgds, most recent first.
    [<Fact>]
    let ``A NOFLUSH switch back to a cached root keeps its translations`` () =
        let controls = PagingControls(PagingMode.Long4, maxPhyAddr = 46)
        let noFlush = ShadowOp.GuestMovCr3.NoFlush
        let ops: ShadowOp list =
            [ ShadowOp.CreateSlot(0, 0x100UL, 16UL, 0x5000UL, false)
              ShadowOp.CreateSlot(1, 0x400UL, 16UL, 0x8000UL, false)
              ShadowOp.GuestStore(0x100000UL, 0x101000UL ||| pwua, 8)   // PML4 A
              ShadowOp.GuestStore(0x104000UL, 0x101000UL ||| pwua, 8)   // PML4 B shares A's PDPT
              ShadowOp.GuestStore(0x101000UL, 0x102000UL ||| pwua, 8)
              ShadowOp.GuestStore(0x102000UL, 0x103000UL ||| pwua, 8)
              ShadowOp.GuestStore(0x103000UL, 0x400000UL ||| pwua ||| 0x40UL, 8)
              ShadowOp.GuestSetPaging(controls, 0x100001UL, true)       // PCIDE, PCID 1
              ShadowOp.GuestAccess(Access.Read(0x10UL))
              ShadowOp.GuestMovCr3(0x104002UL ||| noFlush)
              ShadowOp.GuestMovCr3(0x100001UL ||| noFlush)
              ShadowOp.GuestAccess(Access.Read(0x10UL)) ]
        let results, state = Shadow.run ops (Shadow.create (ShadowConfig 46))
        let switches =
            [ for op in ops do
                  match op with
                  | ShadowTlbOp(ShadowMovCr3 cr3) -> yield cr3 &&& ~~~noFlush
                  | _ -> () ]
        Assert.Equal<uint64 list>([ 0x104002UL; 0x100001UL ], switches)
        match List.last results with
        | ShadowTranslated(0x400010UL, _, false) -> ()
        | other -> failwithf "expected a hit on the cached root, got %A" other
        Assert.Equal<uint64 list>([ 0x100001UL; 0x104002UL ], [ for r in state.Roots.All -> r.Pgd ])
