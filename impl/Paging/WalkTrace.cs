using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// What one <see cref="GuestVcpu.Translate"/> read: the guest-physical address of every paging-structure
/// entry read from memory, in walk order (top down), including the entry that ended a faulting walk.
/// PAE's PDPTE registers are not memory reads and do not appear; nor does a table outside every memslot
/// (nothing was read). A plain struct on the caller's stack: no allocation. It holds addresses only, so
/// the TDP MMU's guest accesses zero and fill no more than they use; <see cref="AccessTrace"/> adds the
/// values for callers that report what a walk changed.
/// </summary>
public struct WalkTrace : IWalkObserver
{
    /// <summary>At most one entry per level: 5-level paging reads five.</summary>
    public const int MaxEntries = 5;

    private EntryWords _gpas;
    private byte _count;
    private byte _used;
    private byte _entryBytes;

    /// <summary>Entries read from memory.</summary>
    public readonly int Count => _count;

    /// <summary>
    /// Entries the translation used: every entry read when the walk translated (they get the A bit,
    /// the last one, the leaf, gets D for a write), 0 when it faulted.
    /// </summary>
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

    /// <summary>Guest-physical address of the leaf entry (the last one used); only when <see cref="Used"/> &gt; 0.</summary>
    public readonly ulong LeafGpa => this[_used - 1];

    static bool IWalkObserver.WritesAccessedDirty => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IWalkObserver.EntryRead(ulong gpa, ulong pte) => Record(gpa);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Record(ulong gpa) => _gpas[_count++] = gpa;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    readonly void IWalkObserver.EntryUnbacked(ulong gpa) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    readonly void IWalkObserver.EntryUsed(int level, ulong pte, uint rightsSoFar) { }

    internal void Start(int entryBytes)
    {
        _count = 0;
        _used = 0;
        _entryBytes = (byte)entryBytes;
    }

    internal void Finish(bool translated) => _used = translated ? _count : (byte)0;

    public override readonly string ToString()
    {
        var parts = new string[_count];
        for (int i = 0; i < _count; i++)
            parts[i] = $"0x{_gpas[i]:X}";
        return $"WalkTrace([{string.Join(", ", parts)}], used={_used}, {_entryBytes}-byte entries)";
    }

}

/// <summary>One 64-bit word per level a walk can read (<see cref="WalkTrace.MaxEntries"/>), inline in a trace.</summary>
[InlineArray(WalkTrace.MaxEntries)]
internal struct EntryWords
{
    private ulong _element0;
}
