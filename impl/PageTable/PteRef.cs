using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// One entry of a table, as a walk or an iterator found it: where it is, its level, the first frame it
/// covers (index space) and its value when it was read. Writes go through <see cref="Write"/>, so the
/// entry never leaks into policy code. Made only from a <see cref="TableRef"/> and an index (asserted);
/// it keeps the entry's address rather than table and index so that it stays four fields, which the JIT
/// keeps in registers on the fault path (a fifth field sends it to the stack).
/// </summary>
internal readonly unsafe struct PteRef
{
    private readonly ulong* _entry;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PteRef(TableRef table, int index, int level, ulong frame, ulong value)
    {
        Debug.Assert(!table.IsNull, "entry outside any table");
        Debug.Assert((uint)index < TableGeometry.EntriesPerTable, "entry index outside the table");
        table.AssertLevel(level);
        _entry = table.Page + index;
        Level = level;
        Frame = frame;
        Value = value;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PteRef(ulong* entry, int level, ulong frame, ulong value)
    {
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

    /// <summary>The table holding the entry (tables are page aligned).</summary>
    public TableRef Table
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => TableRef.FromPage((ulong*)((nuint)_entry & ~(nuint)(TableGeometry.TableBytes - 1)), Level);
    }

    /// <summary>The entry's value now (it may have been written since it was reached).</summary>
    public ulong Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Debug.Assert(_entry != null, "no entry");
            return *_entry;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(ulong value)
    {
        Debug.Assert(_entry != null, "no entry");
        *_entry = value;
    }

    /// <summary>Writes <paramref name="value"/> and returns the entry as it now is.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PteRef Store(ulong value)
    {
        Write(value);
        return new PteRef(_entry, Level, Frame, value);
    }

    /// <summary>Makes the entry not present (every format treats an all-zero entry as absent).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Clear()
    {
        Debug.Assert(_entry != null, "no entry");
        *_entry = 0;
    }

    // ---- atomic access, for walkers under a shared lock (impl/TdpConcurrent) ----

    /// <summary>The entry's value now, read with acquire semantics (a table it points at is seen initialised).</summary>
    public ulong CurrentAcquire
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            AssertAtomicEntry();
            return Volatile.Read(ref *_entry);
        }
    }

    /// <summary>
    /// Writes <paramref name="value"/> if the entry still holds <paramref name="expected"/>; returns the value it
    /// held (equal to <paramref name="expected"/> when the exchange happened). A full fence, as cmpxchg.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong CompareExchange(ulong value, ulong expected)
    {
        AssertAtomicEntry();
        return Interlocked.CompareExchange(ref *_entry, value, expected);
    }

    /// <summary>Writes <paramref name="value"/> and returns the value the entry held (xchg).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Exchange(ulong value)
    {
        AssertAtomicEntry();
        return Interlocked.Exchange(ref *_entry, value);
    }

    /// <summary>Writes <paramref name="value"/> with release semantics (what was written before is seen first).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void WriteRelease(ulong value)
    {
        AssertAtomicEntry();
        Volatile.Write(ref *_entry, value);
    }

    /// <summary>The same entry with <paramref name="value"/> as its value when reached.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PteRef WithValue(ulong value) => new(_entry, Level, Frame, value);

    [Conditional("DEBUG")]
    private void AssertAtomicEntry() =>
        Debug.Assert(_entry != null && ((nuint)_entry & (sizeof(ulong) - 1)) == 0, "an atomic access to no entry or a misaligned one");
}
