using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// A VM's TDP MMU: memslots, the page tables the MMU builds on faults, dirty logging and zapping, as
/// specified by docs/tdp-model.md. Every operation either succeeds or is rejected and changes nothing
/// (<see cref="LastRejection"/> says why). Not thread-safe.
/// </summary>
public interface ITdpVm : IDisposable
{
    TdpFormatKind Format { get; }

    /// <summary>The GPA shared bit (47 or 51), or null.</summary>
    int? SharedBit { get; }

    /// <summary>5 with shared bit 51, else 4.</summary>
    int RootLevel { get; }

    /// <summary>Guest-physical address width: 52 with 5 levels, else 48.</summary>
    int GpaBits { get; }

    SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, byte hostPageShift, bool readOnly);

    SlotStatus DeleteSlot(int id);

    SlotStatus MoveSlot(int id, ulong newBaseGfn);

    SlotStatus SetDirtyLogging(int id, bool on);

    /// <summary>Appends the dirty gfns (absolute, sorted) to <paramref name="gfns"/>, clears the bitmap and
    /// write-protects the leaves that map them. Appends nothing when rejected.</summary>
    SlotStatus GetDirtyLog(int id, List<ulong> gfns);

    TdpAccessOutcome Access(ulong gpa, AccessType type);

    /// <summary>
    /// KVM_PRE_FAULT_MEMORY over [gpa, gpa + size): exactly a read <see cref="Access"/> at the range's start,
    /// then at the end of the leaf that maps it, and so on, until the range is done or a page is in no
    /// memslot or beyond the gpa width (docs/tdp-model.md, "Pre-faulting a range"). Rejected, changing
    /// nothing, when size is 0, either is not page aligned, or the range wraps. Allocates nothing on the
    /// managed heap.
    /// </summary>
    TdpPreFaultOutcome PreFault(ulong gpa, ulong size);

    /// <summary>Zaps every leaf overlapping gfns [startGfn, endGfn) in both roots; tables stay.</summary>
    TdpStatus ZapRange(ulong startGfn, ulong endGfn);

    /// <summary>
    /// kvm_age_gfn over gfns [startGfn, endGfn), both roots (docs/tdp-model.md, "Aging"): <paramref name="young"/>
    /// says whether a leaf there was accessed; each such leaf becomes old (without EPT A/D it is zapped and
    /// flushed). Rejected, changing nothing, for an empty range, one beyond the space, or an MMU that does
    /// not track accessed state.
    /// </summary>
    TdpStatus Age(ulong startGfn, ulong endGfn, out bool young);

    /// <summary>kvm_test_age_gfn: as <see cref="Age"/>, but changes nothing.</summary>
    TdpStatus TestAge(ulong startGfn, ulong endGfn, out bool young);

    /// <summary>Frees every table page and both roots.</summary>
    TdpStatus ZapAll();

    /// <summary>Largest page later faults may install: 12, 21 or 30.</summary>
    TdpStatus SetMaxPageSize(byte pageShift);

    /// <summary>
    /// The remote TLB flushes issued since the last call (or since the VM was created), and forgets them.
    /// Each operation that removes a leaf, points a gfn elsewhere, takes away write access or unlinks a
    /// table flushes what KVM flushes there (docs/tdp-model.md, "TLB flushes"): a huge leaf over its full
    /// size, an unlinked table over everything it covered, a memslot's range after write-protecting it,
    /// everything after <see cref="ZapAll"/>. Ranges are gfns with the shared bit stripped and
    /// cover both roots. Allocates nothing.
    /// </summary>
    TdpFlushLog TakeFlushes();

    /// <summary>Why the most recent rejected operation was rejected (successful operations leave it as it was).</summary>
    string? LastRejection { get; }

    /// <summary>The slots, by id.</summary>
    IReadOnlyList<HostMemslotInfo> Slots { get; }

    byte MaxPageShift { get; }

    /// <summary>Sorted slot-relative offsets marked dirty since the last fetch (empty for an unknown slot
    /// or one that does not log).</summary>
    IEnumerable<ulong> DirtyOffsets(int id);

    TdpPageKey? DirectRoot { get; }

    TdpPageKey? MirrorRoot { get; }

    /// <summary>Calls <paramref name="visit"/> for every table page (direct root's tree first, each in
    /// pre-order) with its present entries in index order. The list is the visitor's only during the call
    /// (the MMU may reuse it for the next page). May allocate.</summary>
    void VisitPages(Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>> visit);

    /// <summary>Table pages currently in use (both roots included).</summary>
    long TablePages { get; }

    // ---- Guest memory and the guest's own paging (docs/tdp-model.md) ----

    /// <summary>
    /// A guest store: size 4 or 8, gpa aligned to it and below 2^<see cref="GpaBits"/> (else Rejected).
    /// Exactly <see cref="Access"/>(gpa, Write); when that maps, the low <paramref name="size"/> bytes of
    /// <paramref name="value"/> are stored at the hpa.
    /// </summary>
    TdpAccessOutcome GuestStore(ulong gpa, ulong value, int size);

    /// <summary>
    /// Null: paging off (forgets the paging state). Otherwise MOV CR3 under <paramref name="controls"/>
    /// (PAE loads and checks the PDPTEs from guest memory): Ok, GuestFault(#GP) with the state unchanged,
    /// or Rejected for invalid input (unknown mode, MAXPHYADDR outside 36..52, CR3 &gt;= 2^32 in 32-bit/PAE).
    /// </summary>
    TdpGuestOutcome GuestSetPaging(PagingControls? controls, ulong cr3);

    /// <summary>
    /// A guest access. Paging off: <see cref="Access"/>(gva, type). On: the guest walk over guest memory,
    /// a read access per entry read, GuestFault on #PF/#GP, a write access per A/D update (the updated
    /// entry stored when it maps), then the access to the translated gpa, whose outcome is the result.
    /// Rejected, changing nothing, for invalid input (unknown enum values, an implicit fetch, a gva of 2^32
    /// or more outside 4/5-level paging, or with paging off a gva beyond the gpa width).
    /// </summary>
    TdpGuestOutcome GuestAccess(ulong gva, AccessType type, Privilege priv);

    /// <summary>The guest's paging controls, or null while paging is off.</summary>
    PagingControls? GuestControls { get; }

    /// <summary>The guest's CR3 (0 while paging is off).</summary>
    ulong GuestCr3 { get; }

    /// <summary>PAE PDPTE register <paramref name="i"/> (0..3) while the guest is in PAE paging, else 0.</summary>
    ulong GuestPdpte(int i);

    /// <summary>Calls <paramref name="visit"/>(hpa, value) for every non-zero 8-byte word (hpa 8-aligned)
    /// of every slot's host memory.</summary>
    void VisitHostMemory(Action<ulong, ulong> visit);

    /// <summary>From now on, log the host frame (hpa &gt;&gt; 12) of every write to host memory, and of every written page
    /// of a slot deleted (it reads zero after): the differential harness then reads only those frames after a step.</summary>
    void TrackHostWrites();

    /// <summary>Moves the host frames logged since the last call (or <see cref="TrackHostWrites"/>) into
    /// <paramref name="hostPfns"/>; false, moving nothing, when writes are not tracked.</summary>
    bool TakeWrittenHostFrames(ICollection<ulong> hostPfns);

    /// <summary>Host frame <paramref name="hostPfn"/>'s 512 words into <paramref name="words"/>, as <see cref="VisitHostMemory"/>
    /// reports them (zero where it reports none); all zero, and false, when no slot's host memory holds the frame.</summary>
    bool ReadHostFrame(ulong hostPfn, ulong[] words);
}
