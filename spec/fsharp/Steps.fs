namespace MmuSpec.FSharp

open MmuSpec.Spec.Paging
open MmuSpec.Spec.Memory
open MmuSpec.Spec.GuestWalk
open MmuSpec.Spec.Tdp
open MmuSpec.Spec.Shadow
open MmuSpec.FSharp.Patterns

/// MOV CR3's outcome as a closed type: the new state, or the #GP with its reason (where
/// GuestMachine.Boot returns null and drops the reason).
type Boot<'State> =
    | Booted of 'State
    | Gp of GpReason

/// The shadow TLB layer's verdict on one result (docs/shadow-model.md, "Oracle 2"): where
/// ShadowTlb.Violation returns null for an allowed result.
type Verdict =
    | Allowed
    | Violates of why: string

/// Guest-physical memory with options where the C# reads return null (a gpa in no memslot); the
/// memory comes last so reads and writes pipe.
module Memory =
    let ofSlots (slots: Memslot list) = GuestMemory.FromSlots slots

    /// The 8 bytes at an 8-aligned gpa, None when no memslot backs them.
    let read64 gpa (memory: GuestMemory) = Option.ofNullable (memory.Read64 gpa)

    /// The 4 bytes at a 4-aligned gpa, None when no memslot backs them.
    let read32 gpa (memory: GuestMemory) = Option.ofNullable (memory.Read32 gpa)

    /// An entry of 4 or 8 bytes, None when no memslot backs it.
    let read gpa size (memory: GuestMemory) = Option.ofNullable (memory.Read(gpa, size))

    /// Memory with an entry of 4 or 8 bytes stored; unchanged outside every memslot.
    let write gpa value size (memory: GuestMemory) = memory.Write(gpa, value, size)

/// The guest page walk (spec/GuestWalk, spec/Paging) as curried functions, and its operations as
/// values of the base type, so a list of them needs no upcast.
module Walk =
    /// MOV CR3 (SDM §4.4.1, §4.5): the CPU state, or #GP with the reason.
    let loadCr3 controls cr3 memory : Boot<CpuState> =
        match CpuState.LoadCr3(controls, cr3, memory) with
        | Cr3Loaded cpu -> Booted cpu
        | Cr3Gp reason -> Gp reason

    /// A machine whose CR3 is loaded from `cr3` (GuestMachine.Boot), or #GP with the reason.
    let boot controls cr3 memory : Boot<GuestMachine> =
        match loadCr3 controls cr3 memory with
        | Booted cpu -> Booted(GuestMachine(cpu, memory))
        | Gp reason -> Gp reason

    /// One access's walk: its outcome and the memory after the A/D updates.
    let translate (cpu: CpuState) (memory: GuestMemory) (access: Access) =
        let t = PageWalk.Translate(cpu, memory, access)
        t.Result, t.Memory

    /// One access's walk with every step kept (the entries read, the rule that decided, A/D written).
    let explain (cpu: CpuState) (memory: GuestMemory) (access: Access) = PageWalk.Explain(cpu, memory, access)

    /// One operation: what it returned and the machine after it.
    let step (op: Op) (machine: GuestMachine) =
        let s = machine.Step op
        s.Result, s.Machine

    /// Operations in order: their results and the last machine.
    let run (ops: Op list) (machine: GuestMachine) = List.mapFold (fun m op -> step op m) machine ops

    let access a : Op = Op.GuestAccess a
    let writeGuest gpa value size : Op = Op.WriteGuest(gpa, value, size)
    let movCr3 cr3 : Op = Op.LoadCr3 cr3
    let setControls controls : Op = Op.SetControls controls

/// The TDP MMU model (spec/Tdp, docs/tdp-model.md) as curried functions, and its operations as
/// values of the base type.
module Tdp =
    let create config = TdpState.Create config

    /// One operation: what it returned and the state after it.
    let step (op: TdpOp) (state: TdpState) =
        let s = state.Step op
        s.Result, s.State

    /// Operations in order: their results and the last state.
    let run (ops: TdpOp list) (state: TdpState) = List.mapFold (fun s op -> step op s) state ops

    /// The guest's CPU state, None while its paging is off.
    let guestCpu (state: TdpState) = Option.ofObj state.GuestCpu

    /// The direct (shared) root's page, None until a fault needs it and after ZapAll.
    let directRoot (state: TdpState) = Option.ofObj state.DirectRoot

    /// The mirror (private) root's page; only a VM with a shared bit has one.
    let mirrorRoot (state: TdpState) = Option.ofObj state.MirrorRoot

    /// The TLB flushes a step from `before` to `after` owes (TdpTlb.MustFlush).
    let mustFlush before after = TdpTlb.MustFlush(before, after)

    /// The flush owed for a gfn range, if any (FlushObligation.DutyFor).
    let dutyFor gfns (obligation: FlushObligation) = Option.ofObj (obligation.DutyFor gfns)

    let createSlot id baseGfn pages hostPfnBase hostPageSize readOnly : TdpOp =
        TdpOp.CreateSlot(id, baseGfn, pages, hostPfnBase, hostPageSize, readOnly)
    let deleteSlot id : TdpOp = TdpOp.DeleteSlot id
    let moveSlot id newBaseGfn : TdpOp = TdpOp.MoveSlot(id, newBaseGfn)
    let setDirtyLogging id on : TdpOp = TdpOp.SetDirtyLogging(id, on)
    let getDirtyLog id : TdpOp = TdpOp.GetDirtyLog id
    let accessGpa gpa accessType : TdpOp = TdpOp.AccessGpa(gpa, accessType)
    let zapRange startGfn endGfn : TdpOp = TdpOp.ZapRange(startGfn, endGfn)
    let zapAll: TdpOp = TdpOp.ZapAll()
    let setMaxPageSize size : TdpOp = TdpOp.SetMaxPageSize size
    /// Map [gpa, gpa + size) as read faults would (KVM_PRE_FAULT_MEMORY).
    let preFault gpa size : TdpOp = TdpOp.PreFault(gpa, size)
    /// kvm_age_gfn / kvm_test_age_gfn over gfns [startGfn, endGfn) (a VM whose config tracks A/D).
    let age startGfn endGfn : TdpOp = TdpOp.Age(startGfn, endGfn)
    let testAge startGfn endGfn : TdpOp = TdpOp.TestAge(startGfn, endGfn)
    let guestStore gpa value size : TdpOp = TdpOp.GuestStore(gpa, value, size)
    /// The guest loads controls and CR3 (Some), or turns paging off (None).
    let guestSetPaging (controls: PagingControls option) cr3 : TdpOp = TdpOp.GuestSetPaging(Option.toObj controls, cr3)
    let guestAccess access : TdpOp = TdpOp.GuestAccess access
    /// The host starts changing the pages behind [startGfn, endGfn) (an MMU notifier's invalidate_range_start).
    let hostInvalidateStart startGfn endGfn : TdpOp = TdpOp.HostInvalidateStart(startGfn, endGfn)
    /// ... and is done: the pages moved (invalidate_range_end of an open Start of that range).
    let hostInvalidateEnd startGfn endGfn : TdpOp = TdpOp.HostInvalidateEnd(startGfn, endGfn)
    /// The host starts (stops) tracking writes to a gfn: no leaf maps it writable meanwhile.
    let trackWrites gfn : TdpOp = TdpOp.TrackWrites gfn
    let untrackWrites gfn : TdpOp = TdpOp.UntrackWrites gfn

/// The shadow MMU model (spec/Shadow, docs/shadow-model.md) and its TLB layer as curried functions,
/// and its operations as values of the base type.
module Shadow =
    let create config = ShadowState.Create config

    /// One operation: what it returned and the state after it.
    let step (op: ShadowOp) (state: ShadowState) =
        let s = state.Step op
        s.Result, s.State

    /// Operations in order: their results and the last state.
    let run (ops: ShadowOp list) (state: ShadowState) = List.mapFold (fun s op -> step op s) state ops

    /// The guest's CPU state, None while its paging is off.
    let guestCpu (state: ShadowState) = Option.ofObj state.GuestCpu

    /// The current root (its pgd, role, pages and whether it is unsync), None before one is loaded.
    let currentRoot (state: ShadowState) = Option.ofObj state.Roots.Current

    /// The TLB layer at a state: only what the guest's tables say now may be seen.
    let tlbStart state = ShadowTlb.Start state

    /// Whether the architecture allows `result` of `op`, given the state after it; judge before `record`.
    let judge (op: ShadowOp) (result: VmResult) (after: ShadowState) (tlb: ShadowTlb) =
        match tlb.Violation(op, result, after) with
        | Null -> Allowed
        | NonNull why -> Violates why

    /// The TLB layer after `op` returned `result` and left `after`.
    let record (op: ShadowOp) (result: VmResult) (after: ShadowState) (tlb: ShadowTlb) = tlb.Record(op, result, after)

    let createSlot id baseGfn pages hostPfnBase readOnly : ShadowOp = ShadowOp.CreateSlot(id, baseGfn, pages, hostPfnBase, readOnly)
    let deleteSlot id : ShadowOp = ShadowOp.DeleteSlot id
    let moveSlot id newBaseGfn : ShadowOp = ShadowOp.MoveSlot(id, newBaseGfn)
    let setDirtyLogging id on : ShadowOp = ShadowOp.SetDirtyLogging(id, on)
    let getDirtyLog id : ShadowOp = ShadowOp.GetDirtyLog id
    let guestStore gpa value size : ShadowOp = ShadowOp.GuestStore(gpa, value, size)
    /// Paging controls and CR3 with CR4.PCIDE clear; `guestSetPagingPcide` sets it.
    let guestSetPaging controls cr3 : ShadowOp = ShadowOp.GuestSetPaging(controls, cr3, false)
    let guestSetPagingPcide controls cr3 : ShadowOp = ShadowOp.GuestSetPaging(controls, cr3, true)
    /// MOV CR3 with the raw operand; `noFlush` is its bit 63.
    let movCr3 cr3 : ShadowOp = ShadowOp.GuestMovCr3 cr3
    let noFlush = ShadowOp.GuestMovCr3.NoFlush
    let invpcid invpcidType pcid gva : ShadowOp = ShadowOp.Invpcid(invpcidType, pcid, gva)
    let guestAccess access : ShadowOp = ShadowOp.GuestAccess access
    let invlpg gva : ShadowOp = ShadowOp.Invlpg gva
    let flushTlb: ShadowOp = ShadowOp.FlushTlb()
    let zapRange startGfn endGfn : ShadowOp = ShadowOp.ZapRange(startGfn, endGfn)
    let zapAll: ShadowOp = ShadowOp.ZapAll()
