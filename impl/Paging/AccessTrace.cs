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
    private EntryWords _gpas;
    private EntryWords _values;
    private ulong _unbackedGpa;
    private bool _unbacked;
    private byte _count;
    private byte _used;
    private byte _entryBytes;

    /// <summary>Entries read from memory.</summary>
    public readonly int Count => _count;

    /// <summary>Entries the translation used (all read when it translated, each given A; the leaf D for a write), 0 when it faulted.</summary>
    public readonly int Used => _used;

    /// <summary>Width of each entry in memory: 4 (32-bit paging) or 8.</summary>
    public readonly int EntryBytes => _entryBytes;

    /// <summary>Guest-physical address of entry <paramref name="i"/> (0 = the first one read).</summary>
    public readonly ulong this[int i]
    {
        get
        {
            if ((uint)i >= _count)
                ThrowHelper.ArgumentOutOfRange(nameof(i), "No such entry in the trace.");
            return _gpas[i];
        }
    }

    /// <summary>Value of entry <paramref name="i"/> as the walk read it (before any A/D update of this walk).</summary>
    public readonly ulong Value(int i)
    {
        if ((uint)i >= _count)
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
        _gpas[_count] = gpa;
        _values[_count++] = pte;
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
        _count = 0;
        _used = 0;
        _unbacked = false;
        _entryBytes = (byte)entryBytes;
    }

    internal void Finish(bool translated) => _used = translated ? _count : (byte)0;

    public override readonly string ToString()
    {
        var parts = new string[_count];
        for (int i = 0; i < _count; i++)
            parts[i] = $"0x{_gpas[i]:X}=0x{_values[i]:X}";
        return $"AccessTrace([{string.Join(", ", parts)}], used={_used}, {_entryBytes}-byte entries{(_unbacked ? $", unbacked 0x{_unbackedGpa:X}" : "")})";
    }
}
