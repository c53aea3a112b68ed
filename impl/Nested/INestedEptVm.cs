using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Nested;

/// <summary>What INVEPT does to a cached root whose EPTP it names (docs/nested-ept.md, "The impl").</summary>
public enum NestedRootPolicy : byte
{
    /// <summary>Keep the root and resync it: its unsync pages are synced (the rest follow L1's EPT through write tracking); nothing is rebuilt.</summary>
    KeepAndResync,

    /// <summary>KVM's handle_invept: free every cached root whose EP4TA matches (all of them for all-context); the next L2 access rebuilds.</summary>
    Upstream,
}

/// <summary>The INVEPT types (the instruction's register operand).</summary>
public enum InveptKind : byte
{
    SingleContext = 1,
    AllContext = 2,
}

/// <summary>Why an L1 EPT entry is misconfigured (SDM Vol. 3C §29.3.3.1), in the SDM's order.</summary>
public enum EptMisconfigKind : byte
{
    WriteWithoutRead,
    ExecuteOnlyUnsupported,
    ReservedBits,
    MemoryType,
}

public enum NestedOutcomeKind : byte
{
    Ok,
    Rejected,
    /// <summary>L2's gpa reached <see cref="NestedOutcome.L1Gpa"/>, backed at <see cref="NestedOutcome.Hpa"/>.</summary>
    Translated,
    /// <summary>An EPT violation reflected to L1 with <see cref="NestedOutcome.Qualification"/>.</summary>
    EptViolation,
    /// <summary>An EPT misconfiguration reported to L1 (<see cref="NestedOutcome.Misconfig"/> at <see cref="NestedOutcome.Level"/>).</summary>
    EptMisconfiguration,
    /// <summary>No memslot holds the L1 gpa (<see cref="NestedOutcome.L1Gpa"/>): the access exits to userspace.</summary>
    MmioExit,
    /// <summary>L2's own tables raise #PF with <see cref="NestedOutcome.ErrorCode"/> (delivered to L2, no VM exit).</summary>
    L2PageFault,
    /// <summary>L2's linear address is not canonical: #GP for L2.</summary>
    L2GeneralProtection,
    /// <summary>VMFUNC leaf 0 could not switch the EPTP: a VM exit to L1 (<see cref="NestedOutcome.Gpa"/> holds the index).</summary>
    VmfuncExit,
}

/// <summary>The INVVPID types (the instruction's register operand).</summary>
public enum InvvpidKind : byte
{
    IndividualAddress = 0,
    SingleContext = 1,
    AllContexts = 2,
    SingleContextRetainingGlobals = 3,
}

/// <summary>The gva TLB's bookkeeping (docs/nested-ept.md, "VPIDs, VM entries and exits, EPTP switching"): hits, fills, flushes.</summary>
public readonly record struct NestedGvaTlbCounters(long Hits, long Fills, long Flushes);

/// <summary>
/// What a nested operation returned. <see cref="Gpa"/> is L2's gpa (accesses) or L1's (stores);
/// <see cref="Faulted"/>: the MMU walked L1's EPT (false: a shadow hit). <see cref="Gla"/>: L2's linear address of a
/// violation whose qualification sets bit 7; <see cref="ErrorCode"/>: an L2 #PF's.
/// </summary>
public readonly record struct NestedOutcome(
    NestedOutcomeKind Kind, ulong Gpa = 0, ulong L1Gpa = 0, ulong Hpa = 0, ulong Qualification = 0,
    EptMisconfigKind Misconfig = default, int Level = 0, bool Faulted = false, ulong Gla = 0, uint ErrorCode = 0)
{
    public static NestedOutcome Ok => new(NestedOutcomeKind.Ok);
    public static NestedOutcome Rejected => new(NestedOutcomeKind.Rejected);
}

/// <summary>Root bookkeeping, for the policy comparison (docs/nested-ept.md, "Nested cached roots").</summary>
public readonly record struct NestedRootCounters(
    long RootsBuilt, long CachedRootHits, long RootsFreedByInvept, long RootsKeptAtInvept, long ShadowPagesCreated);

/// <summary>Unsync bookkeeping (docs/nested-ept.md, "Unsync shadow EPT pages"): pages unsynced by L1 stores, pages synced at
/// INVEPT (keep-and-resync), at a root load and when linked again, gpas synced when a violation was reflected, and entries
/// a sync dropped because their rights ANDed to none.</summary>
public readonly record struct NestedUnsyncCounters(
    long PagesUnsynced, long PagesSyncedAtInvept, long PagesSyncedAtRootLoad, long PagesSyncedAtLink, long GpasSyncedAtViolation, long NoAccessEntriesDropped);

/// <summary>Write flooding and recycling (docs/nested-ept.md, "Write flooding and recycling"): pages live and the bound; pages
/// zapped because L1 flooded their table, children zapped when their last parent went (upstream 2de4085cccea), pages zapped to
/// stay under the bound, and every page zapped (all three and the unsync pages below a zapped one; not slot deletion's zap all).</summary>
public readonly record struct NestedRecycleCounters(
    int LivePages, int MaxPages, long ZappedForFlooding, long OrphansZapped, long ZappedAtLimit, long PagesZapped);

/// <summary>One shadow EPT page as tests and the harness read it back (allocates).</summary>
public readonly record struct NestedShadowPageInfo(ulong Gfn, int Level, bool Direct, bool AccessedDirty, byte Access, int RootCount, int PresentEntries);

/// <summary>
/// KVM's MMU for an L2 whose L1 uses EPT (paging_tmpl.h as PTTYPE_EPT, vmx/nested.c): shadow EPT pages that map
/// L2 gpas to host frames, built from L1's EPT tables in L1's memory (the host memslots' memory). A memslot operation
/// returns a <see cref="SlotStatus"/>, every other one a <see cref="NestedOutcome"/>; a rejected one changed nothing
/// (<see cref="LastRejection"/> says why). Not thread-safe.
/// </summary>
public interface INestedEptVm : IDisposable
{
    int MaxPhyAddr { get; }

    /// <summary>Whether L0 offers L1 execute-only EPT entries (else bits 2:0 = 100b are a misconfiguration).</summary>
    bool ExecuteOnly { get; }

    NestedRootPolicy RootPolicy { get; }

    /// <summary>Whether an L1 store into a shadowed last-level EPT table unsyncs its pages instead of zapping (KVM's unsync).</summary>
    bool Unsync { get; }

    SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase);

    /// <summary>Zaps every shadow page and frees every root (KVM's memslot quirk); the slot's memory is gone.</summary>
    SlotStatus DeleteSlot(int id);

    /// <summary>L1 stores 4 or 8 aligned bytes: Ok, MmioExit or Rejected. A store into a shadowed EPT table zaps what was built from the entry, or with <see cref="Unsync"/> unsyncs a last-level one.</summary>
    NestedOutcome L1Store(ulong gpa, ulong value, int size);

    /// <summary>L1 writes the EPTP field and enters L2 (nested_ept_new_eptp): Ok, or Rejected for an EPTP VM entry refuses.</summary>
    NestedOutcome LoadEptp(ulong eptp);

    /// <summary>INVEPT: Ok, or Rejected (an invalid descriptor EPTP for single-context: VMfailValid).</summary>
    NestedOutcome Invept(InveptKind type, ulong eptp);

    /// <summary>L2 touches guest-physical <paramref name="gpa"/>: Translated, EptViolation, EptMisconfiguration, MmioExit or Rejected (no EPTP yet, or beyond MAXPHYADDR).</summary>
    NestedOutcome L2Access(ulong gpa, AccessType type);

    /// <summary>
    /// L1 enters L2 with L2's paging state (VMCS guest CR0/CR3/CR4/EFER; for PAE the guest PDPTE fields, 4 values):
    /// Ok, or Rejected when VM entry's guest-state checks fail (CR3 beyond MAXPHYADDR or 32 bits, a present PDPTE with a
    /// reserved bit). <paramref name="pagingOn"/> false: L2 runs with paging off.
    /// </summary>
    NestedOutcome SetL2Paging(bool pagingOn, in PagingControls controls, ulong cr3, ReadOnlySpan<ulong> pdptes);

    /// <summary>
    /// L2 accesses linear address <paramref name="gva"/>: L2's tables read (and their A/D bits written) by the processor
    /// through the shadow EPT, a shadow miss handled as L0's EPT violation (install, or reflect to L1 with bits 7 and 8 of
    /// the qualification). Translated, EptViolation, EptMisconfiguration, MmioExit, L2PageFault, L2GeneralProtection or
    /// Rejected (no EPTP, or an address the walk cannot take).
    /// </summary>
    NestedOutcome L2GvaAccess(ulong gva, AccessType type, Privilege privilege);

    /// <summary>L2 exits to L1: Ok, or Rejected when L2 is not running.</summary>
    NestedOutcome VmExit();

    /// <summary>L1 enters L2 with VMCS12's enable VPID, VPID12 and EPTP switching with its list address: Ok, or Rejected (no EPTP, VPID 0 with enable VPID, a bad list address).</summary>
    NestedOutcome VmEntry(bool vpidEnabled, ushort vpid, bool eptpSwitching, ulong eptpList);

    /// <summary>L1's INVVPID: Ok, or Rejected (L2 running, VPID 0 for types 0, 1, 3).</summary>
    NestedOutcome Invvpid(InvvpidKind type, ushort vpid, ulong gva);

    /// <summary>L2's VMFUNC leaf 0 with ECX = <paramref name="index"/>: Ok (switched or the same EPTP), VmfuncExit, or Rejected (L2 not running).</summary>
    NestedOutcome Vmfunc(uint index);

    /// <summary>The gva TLB's counters (all zero when it is off).</summary>
    NestedGvaTlbCounters GvaTlbCounters { get; }

    string? LastRejection { get; }

    NestedRootCounters Counters { get; }

    NestedUnsyncCounters UnsyncCounters { get; }

    /// <summary>The bound on live shadow pages (KVM's n_max_mmu_pages): 20 per 1000 pages of the memslots, at least 64, unless set.</summary>
    int MaxShadowPages { get; }

    /// <summary>KVM_SET_NR_MMU_PAGES: Ok, the pages above the new bound zapped oldest first; Rejected below 64.</summary>
    NestedOutcome SetMaxShadowPages(int pages);

    NestedRecycleCounters RecycleCounters { get; }

    /// <summary>The EPTPs of the cached roots, current first (0 when there is none), then the previous ones, most recent first.</summary>
    IReadOnlyList<ulong> CachedRootEptps();

    // ---- the abstract state, for the harness and tests (allocates) ----

    IReadOnlyList<HostMemslotInfo> Slots();

    /// <summary>Every non-zero 8-byte word of L1's memory as (host-physical address, value): slots by id, words ascending.</summary>
    void VisitHostMemory(Action<ulong, ulong> visit);

    IReadOnlyList<NestedShadowPageInfo> ShadowPages();

    /// <summary>Disagreements between the MMU's derived structures (hash, parent links, write tracking, root counts) and its pages.</summary>
    IReadOnlyList<string> InvariantProblems();
}

/// <summary>Creates a nested EPT MMU.</summary>
public static class NestedEptVm
{
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPhyAddr"/> is outside 36..52.</exception>
    /// <param name="unsync">Unsync shadowed leaf EPT tables on L1 stores (KVM) instead of zapping the entry written (strict).</param>
    /// <param name="gvaTlb">Cache L2's gva translations in a per-VPID TLB (the processor's combined mappings) and flush it as KVM does.</param>
    public static INestedEptVm Create(int maxPhyAddr, bool executeOnly, NativePagePool pool, NestedRootPolicy policy = NestedRootPolicy.KeepAndResync, bool unsync = false, bool gvaTlb = false) =>
        new NestedEptMmu(maxPhyAddr, executeOnly, pool, policy, unsync, gvaTlb);
}
