using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// One entry of a table, as a walk or an iterator found it: where it is, its level, the first frame it
/// covers (index space) and its value when it was read. Writes go through <see cref="Write"/>, so the
/// entry pointer never leaks into policy code.
/// </summary>
public readonly unsafe struct PteRef
{
    private readonly ulong* _entry;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PteRef(ulong* entry, int level, ulong frame, ulong value)
    {
        Debug.Assert(entry != null, "entry outside any table");
        Debug.Assert(((nuint)entry & (sizeof(ulong) - 1)) == 0, "misaligned entry");
        _entry = entry;
        Level = level;
        Frame = frame;
        Value = value;
    }

    public int Level { get; }

    /// <summary>First frame the entry covers, aligned to its level.</summary>
    public ulong Frame { get; }

    /// <summary>The entry's value when it was reached.</summary>
    public ulong Value { get; }

    /// <summary>Index of the entry in its table (0..511).</summary>
    public int Index => (int)(((nuint)_entry & (TableGeometry.TableBytes - 1)) / sizeof(ulong));

    /// <summary>The entry's value now (it may have been written since it was reached).</summary>
    public ulong Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => *_entry;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(ulong value) => *_entry = value;

    /// <summary>Makes the entry not present (every format treats an all-zero entry as absent).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Clear() => *_entry = 0;

    internal ulong* Pointer => _entry;
}
