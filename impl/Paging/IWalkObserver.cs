namespace MmuSpec.Impl.Paging;

/// <summary>
/// What the guest walk reports as it goes, and whether it updates accessed/dirty bits itself. The walk
/// is generic over a struct observer, so the JIT compiles one copy per observer and an empty observer
/// (<see cref="GuestVcpu.Access"/>'s) costs nothing.
/// </summary>
internal interface IWalkObserver
{
    /// <summary>True: a permitted translation sets A/D in memory (SDM 4.8). False: the caller does it.</summary>
    static abstract bool WritesAccessedDirty { get; }

    /// <summary>
    /// A paging-structure entry was read from memory at <paramref name="gpa"/> (walk order), with the value
    /// <paramref name="pte"/> the walk saw (before any A/D update of this walk).
    /// </summary>
    void EntryRead(ulong gpa, ulong pte);

    /// <summary>
    /// The walk needed the entry at <paramref name="gpa"/>, but no memslot backs it: the walk ends there
    /// with a not-present fault (KVM treats such a table as not present).
    /// </summary>
    void EntryUnbacked(ulong gpa);

    /// <summary>
    /// The entry just read at <paramref name="level"/> passed the present and reserved-bit checks and is
    /// part of the path: its value and the rights folded through it (<see cref="AccessRights"/> layout).
    /// </summary>
    void EntryUsed(int level, ulong pte, uint rightsSoFar);
}
