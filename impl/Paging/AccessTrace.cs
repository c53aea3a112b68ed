using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// What one traced <see cref="GuestVcpu.Access(ulong, AccessType, Privilege, ref AccessTrace)"/> read: the
/// guest-physical address and the value (before this walk's A/D updates) of every paging-structure entry read
/// from memory, in walk order, and the entry the walk needed but could not read when no memslot backs it. For
/// callers that report what a walk changed (the CLI's batch walks) without a second walk. A plain struct on
/// the caller's stack: no allocation. As the untraced Access, the walk sets the A/D bits itself.
/// </summary>
public struct AccessTrace : IWalkObserver
{
    private WalkTrace _trace;     // the addresses, counts and entry width, as an untraced Translate records them
    private EntryWords _values;   // entry i's value as the walk read it
    private ulong _unbackedGpa;
    private bool _unbacked;

    /// <summary>Entries read from memory.</summary>
    public readonly int Count => _trace.Count;

    /// <summary>Entries the translation used (all read when it translated, each given A; the leaf D for a write), 0 when it faulted.</summary>
    public readonly int Used => _trace.Used;

    /// <summary>Width of each entry in memory: 4 (32-bit paging) or 8.</summary>
    public readonly int EntryBytes => _trace.EntryBytes;

    /// <summary>Guest-physical address of entry <paramref name="i"/> (0 = the first one read).</summary>
    public readonly ulong this[int i] => _trace[i];

    /// <summary>Value of entry <paramref name="i"/> as the walk read it (before any A/D update of this walk).</summary>
    public readonly ulong Value(int i)
    {
        if ((uint)i >= _trace.Count)
            ThrowHelper.ArgumentOutOfRange(nameof(i), "No such entry in the trace.");
        return _values[i];
    }

    /// <summary>
    /// The guest-physical address of the entry the walk needed but could not read, no memslot backing it
    /// (the walk then faulted as for a not-present entry); null when every entry it needed was read.
    /// </summary>
    public readonly ulong? UnbackedGpa => _unbacked ? _unbackedGpa : null;

    static bool IWalkObserver.WritesAccessedDirty => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IWalkObserver.EntryRead(ulong gpa, ulong pte)
    {
        _values[_trace.Count] = pte;
        _trace.Record(gpa);
    }

    void IWalkObserver.EntryUnbacked(ulong gpa)
    {
        _unbackedGpa = gpa;
        _unbacked = true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    readonly void IWalkObserver.EntryUsed(int level, ulong pte, uint rightsSoFar) { }

    internal void Start(int entryBytes)
    {
        _trace.Start(entryBytes);
        _unbacked = false;
    }

    internal void Finish(bool translated) => _trace.Finish(translated);

    public override readonly string ToString()
    {
        var parts = new string[Count];
        for (int i = 0; i < Count; i++)
            parts[i] = $"0x{_trace[i]:X}=0x{_values[i]:X}";
        return $"AccessTrace([{string.Join(", ", parts)}], used={Used}, {EntryBytes}-byte entries{(_unbacked ? $", unbacked 0x{_unbackedGpa:X}" : "")})";
    }
}
