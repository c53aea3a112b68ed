using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// One table in native memory: a 4 KiB page of 512 eight-byte entries, named by its address. Table code
/// reaches entries only through this type, so raw pointers stay with the allocators that lay pages out
/// (TdpPageAllocator) and the rest is safe code. Pointer-sized in Release; a DEBUG build also carries the
/// level the table was made for and asserts, where an address enters, that it is page aligned and the
/// level is 1..5, and on every entry access that the index is below 512.
/// </summary>
internal readonly unsafe struct TableRef : IEquatable<TableRef>
{
    private readonly ulong* _entries;
#if DEBUG
    private readonly int _level;
#endif

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TableRef(ulong* entries, int level)
    {
        Debug.Assert(entries != null, "a table at address 0");
        Debug.Assert(((nuint)entries & (TableBytes - 1)) == 0, "a table is not page aligned");
        Debug.Assert(level is >= 1 and <= MaxLevel, "a table's level is 1..5");
        _entries = entries;
#if DEBUG
        _level = level;
#endif
    }

    /// <summary>
    /// The table at <paramref name="address"/> (from an entry's table-address field, or an allocator's page),
    /// used at <paramref name="level"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TableRef At(ulong address, int level) => new((ulong*)address, level);

    /// <summary>For the allocators, which own the memory: the page at <paramref name="page"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static TableRef FromPage(ulong* page, int level) => new(page, level);

    /// <summary>No table (an empty tree's root).</summary>
    public bool IsNull => _entries == null;

    /// <summary>The table's address, as a table entry holds it.</summary>
    public ulong Address => (ulong)_entries;

    /// <summary>Entry <paramref name="index"/> (0..511).</summary>
    public ref ulong this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Debug.Assert(_entries != null, "entry of no table");
            Debug.Assert((uint)index < EntriesPerTable, "entry index outside the table");
            return ref _entries[index];
        }
    }

    /// <summary>Asserts that the table is used at the level it was made for (DEBUG only).</summary>
    [Conditional("DEBUG")]
    public void AssertLevel(int level)
    {
#if DEBUG
        Debug.Assert(_entries != null && _level == level, "a table used at another level than it was made for");
#endif
    }

    /// <summary>Zeroes every entry.</summary>
    public void Clear()
    {
        Debug.Assert(_entries != null, "clearing no table");
        NativeMemory.Clear(_entries, TableBytes);
    }

    /// <summary>The page, for its allocator.</summary>
    internal ulong* Page => _entries;

    public bool Equals(TableRef other) => _entries == other._entries;

    public override bool Equals(object? obj) => obj is TableRef other && Equals(other);

    public override int GetHashCode() => ((nuint)_entries).GetHashCode();

    public static bool operator ==(TableRef a, TableRef b) => a._entries == b._entries;

    public static bool operator !=(TableRef a, TableRef b) => a._entries != b._entries;

    public override string ToString() => IsNull ? "(no table)" : $"table at 0x{Address:X}";
}
