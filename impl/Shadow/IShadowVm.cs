using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// A VM's shadow MMU (docs/shadow-model.md): memslots, the guest's own paging state, and the shadow
/// pages the MMU builds from the guest's tables. A memslot operation returns a <see cref="SlotStatus"/>,
/// every other one a <see cref="ShadowOutcome"/>; a rejected one changed nothing (<see cref="LastRejection"/> says why). Not thread-safe.
/// </summary>
public interface IShadowVm : IDisposable
{
    /// <summary>The guest's MAXPHYADDR (fixed): every <see cref="GuestSetPaging"/> must use it.</summary>
    int MaxPhyAddr { get; }

    /// <summary>Whether leaf shadow pages may go unsync (docs/shadow-model.md, "try to unsync").</summary>
    bool AllowUnsync { get; }

    /// <summary>What a flush does to a previous root whose translations may be stale (docs/shadow-model.md, "the cached roots").</summary>
    ShadowRootPolicy RootPolicy { get; }

    /// <summary>Whether a fill also maps its free neighbours (docs/shadow-model.md, "Prefetch").</summary>
    bool Prefetch { get; }

    // ---- host-side operations ----

    SlotStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, bool readOnly);
    SlotStatus DeleteSlot(int id);
    SlotStatus MoveSlot(int id, ulong newBaseGfn);
    SlotStatus SetDirtyLogging(int id, bool on);

    /// <summary>Appends the dirty gfns (absolute, sorted) to <paramref name="gfns"/> and clears the bitmap;
    /// appends nothing when rejected.</summary>
    SlotStatus GetDirtyLog(int id, List<ulong> gfns);

    ShadowOutcome ZapRange(ulong startGfn, ulong endGfn);
    ShadowOutcome ZapAll();

    // ---- guest operations ----

    /// <summary>Ok, MmioExit or Rejected.</summary>
    ShadowOutcome GuestStore(ulong gpa, ulong value, int size);

    /// <summary>Ok, GuestFault(#GP) or Rejected. <paramref name="pcide"/>: CR4.PCIDE (only with 4/5-level paging; otherwise Rejected).</summary>
    ShadowOutcome GuestSetPaging(PagingControls controls, ulong cr3, bool pcide = false);

    /// <summary>MOV CR3 source operand (bit 63 = NOFLUSH when PCIDE is set). Ok, GuestFault(#GP) or Rejected.</summary>
    ShadowOutcome GuestMovCr3(ulong cr3);

    /// <summary>INVPCID. Ok, GuestFault(#GP) or Rejected. <paramref name="type"/> is the raw register value (anything &gt; 3 is #GP).</summary>
    ShadowOutcome Invpcid(ulong type, ulong pcid, ulong gva);

    /// <summary>Translated, GuestFault, MmioExit or Rejected.</summary>
    ShadowOutcome GuestAccess(ulong gva, AccessType type, Privilege privilege);

    ShadowOutcome Invlpg(ulong gva);
    ShadowOutcome FlushTlb();

    string? LastRejection { get; }

    // ---- the abstract state, read back for the differential tests (may allocate) ----

    IReadOnlyList<HostMemslotInfo> Slots { get; }

    /// <summary>Sorted slot-relative dirty offsets (empty for an unknown or non-logging slot).</summary>
    IEnumerable<ulong> DirtyOffsets(int id);

    /// <summary>The guest's paging controls, or null while paging is off.</summary>
    PagingControls? GuestControls { get; }
    ulong GuestCr3 { get; }
    /// <summary>CR4.PCIDE (false while paging is off).</summary>
    bool GuestPcide { get; }
    /// <summary>PAE PDPTE register <paramref name="i"/> (0..3) in PAE paging, else 0.</summary>
    ulong GuestPdpte(int i);

    /// <summary>Every non-zero 8-byte word of host memory: (hpa, value), hpa 8-aligned.</summary>
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

    /// <summary>The current root's pages: null while there is no current root; else one key (4/5-level) or four (PAE, 32-bit; null = none).</summary>
    IReadOnlyList<ShadowPageKey?>? RootKeys { get; }

    /// <summary>The current root, or null (may allocate).</summary>
    ShadowRootView? CurrentRoot { get; }

    /// <summary>The previous roots, most recently used first (may allocate).</summary>
    IReadOnlyList<ShadowRootView> PreviousRoots { get; }

    /// <summary>Counters since creation.</summary>
    ShadowRootStats RootStats { get; }

    /// <summary>Every shadow page with its present entries in index order.</summary>
    void VisitPages(Action<ShadowPageInfo, IReadOnlyList<ShadowEntryInfo>> visit);

    /// <summary>The reverse map: for every gfn with a non-empty rmap, the leaves it lists.</summary>
    void VisitReverseMap(Action<ulong, IReadOnlyList<ShadowEntryRef>> visit);

    /// <summary>For every page with parents, the table entries its parent list holds.</summary>
    void VisitParents(Action<ShadowPageKey, IReadOnlyList<ShadowEntryRef>> visit);

    /// <summary>Shadow pages in existence.</summary>
    long ShadowPages { get; }
}

/// <summary>Result kinds of a shadow-VM operation.</summary>
public enum ShadowStatus : byte
{
    Ok,
    Rejected,
    Translated,
    GuestFault,
    MmioExit,
}

/// <summary>
/// What an operation returned. Translated: <see cref="Gpa"/>, <see cref="Hpa"/> and <see cref="Faulted"/>
/// (false for a shadow hit). MmioExit: <see cref="Gpa"/>. GuestFault: <see cref="Fault"/> (#PF with its
/// error code, or #GP).
/// </summary>
public readonly record struct ShadowOutcome(ShadowStatus Status, ulong Gpa, ulong Hpa, bool Faulted, WalkOutcome Fault)
{
    public static ShadowOutcome Ok => new(ShadowStatus.Ok, 0, 0, false, default);
    public static ShadowOutcome Rejected => new(ShadowStatus.Rejected, 0, 0, false, default);
    public static ShadowOutcome Translated(ulong gpa, ulong hpa, bool faulted) => new(ShadowStatus.Translated, gpa, hpa, faulted, default);
    public static ShadowOutcome MmioExit(ulong gpa) => new(ShadowStatus.MmioExit, gpa, 0, false, default);
    public static ShadowOutcome GuestFault(WalkOutcome fault) => new(ShadowStatus.GuestFault, 0, 0, false, fault);

    public override string ToString() => Status switch
    {
        ShadowStatus.Translated => $"Translated(gpa=0x{Gpa:X}, hpa=0x{Hpa:X}{(Faulted ? ", faulted" : ", hit")})",
        ShadowStatus.MmioExit => $"MmioExit(gpa=0x{Gpa:X})",
        ShadowStatus.GuestFault => $"GuestFault({Fault})",
        _ => Status.ToString(),
    };
}

/// <summary>A shadow page's identity: the gfn and the packed role.</summary>
public readonly record struct ShadowPageKey(ulong Gfn, ShadowRole Role)
{
    public override string ToString() => $"(0x{Gfn:X}, {Role})";
}

/// <summary>A shadow page's bookkeeping as the tests see it.</summary>
/// <param name="UnsyncChildren">Indexes whose bit is set in the page's unsync-children bitmap (empty for direct pages).</param>
public readonly record struct ShadowPageInfo(ShadowPageKey Key, bool Unsync, int WriteFlooding, IReadOnlyList<int> UnsyncChildren);

/// <summary>
/// A present entry. A table entry: <see cref="IsLeaf"/> false, <see cref="Child"/> set, other fields zero.
/// A leaf (level 1 only) maps 4 KiB frame <see cref="Gfn"/> to <see cref="HostPfn"/>; User/Writable/NoExecute/
/// ProtectionKey are the guest's combined rights; <see cref="SpteWritable"/> is the MMU's own W bit.
/// </summary>
public readonly record struct ShadowEntryInfo(
    int Index, bool IsLeaf, ShadowPageKey Child, ulong Gfn, ulong HostPfn,
    bool User, bool Writable, bool NoExecute, int ProtectionKey, bool SpteWritable);

/// <summary>Entry <see cref="Index"/> of page <see cref="Page"/>.</summary>
public readonly record struct ShadowEntryRef(ShadowPageKey Page, int Index);
