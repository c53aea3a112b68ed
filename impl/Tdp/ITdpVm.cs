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

    TdpStatus CreateSlot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, byte hostPageShift, bool readOnly);

    TdpStatus DeleteSlot(int id);

    TdpStatus MoveSlot(int id, ulong newBaseGfn);

    TdpStatus SetDirtyLogging(int id, bool on);

    /// <summary>Appends the dirty gfns (absolute, sorted) to <paramref name="gfns"/>, clears the bitmap and
    /// write-protects the leaves that map them. Appends nothing when rejected.</summary>
    TdpStatus GetDirtyLog(int id, List<ulong> gfns);

    TdpAccessOutcome Access(ulong gpa, AccessType type);

    /// <summary>Zaps every leaf overlapping gfns [startGfn, endGfn) in both roots; tables stay.</summary>
    TdpStatus ZapRange(ulong startGfn, ulong endGfn);

    /// <summary>Frees every table page and both roots.</summary>
    TdpStatus ZapAll();

    /// <summary>Largest page later faults may install: 12, 21 or 30.</summary>
    TdpStatus SetMaxPageSize(byte pageShift);

    /// <summary>Why the most recent rejected operation was rejected (successful operations leave it as it was).</summary>
    string? LastRejection { get; }

    /// <summary>The slots, by id.</summary>
    IReadOnlyList<TdpSlotInfo> Slots { get; }

    byte MaxPageShift { get; }

    /// <summary>Sorted slot-relative offsets marked dirty since the last fetch (empty for an unknown slot
    /// or one that does not log).</summary>
    IEnumerable<ulong> DirtyOffsets(int id);

    TdpPageKey? DirectRoot { get; }

    TdpPageKey? MirrorRoot { get; }

    /// <summary>Calls <paramref name="visit"/> for every table page (direct root's tree first, each in
    /// pre-order) with its present entries in index order. May allocate.</summary>
    void VisitPages(Action<TdpPageKey, IReadOnlyList<TdpEntryInfo>> visit);

    /// <summary>Table pages currently in use (both roots included).</summary>
    long TablePages { get; }
}
