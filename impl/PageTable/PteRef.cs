using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// One entry of a table, as a walk or an iterator found it: its table and index, its level, the first frame
/// it covers (index space) and its value when it was read. Writes go through <see cref="Write"/>, so the
/// table never leaks into policy code.
/// </summary>
internal readonly struct PteRef
{
    private readonly TableRef _table;
    private readonly int _index;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PteRef(TableRef table, int index, int level, ulong frame, ulong value)
    {
        Debug.Assert(!table.IsNull, "entry outside any table");
        Debug.Assert((uint)index < TableGeometry.EntriesPerTable, "entry index outside the table");
        table.AssertLevel(level);
        _table = table;
        _index = index;
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
    public int Index => _index;

    /// <summary>The table holding the entry.</summary>
    public TableRef Table => _table;

    /// <summary>The entry's value now (it may have been written since it was reached).</summary>
    public ulong Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _table[_index];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(ulong value) => _table[_index] = value;

    /// <summary>Makes the entry not present (every format treats an all-zero entry as absent).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Clear() => _table[_index] = 0;
}
