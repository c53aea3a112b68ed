using System.Diagnostics;
using System.Runtime.CompilerServices;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// Map, unmap and walk on a radix tree of 512-entry tables, for any entry format. Nothing here knows
/// about guests: a frame is an index into the tree, a host frame is what a leaf maps. Policy (which
/// level to map at, what to do with the old entry) belongs to the caller; the one rule built in is
/// KVM's: whatever is in the way of a mapping is replaced, and a table that is replaced is freed with
/// everything below it. Range operations use <see cref="PteIterator{TFormat}"/>.
/// Not thread-safe: callers serialize (KVM's mmu_lock held for write).
/// </summary>
internal static class RadixTable<TFormat> where TFormat : struct, IPteFormat
{
    /// <summary>
    /// Follows tables from the root towards <paramref name="frame"/> and returns the leaf covering it,
    /// or the first entry on the way that is not present (then nothing maps the frame).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PteRef Walk(TableRef root, int rootLevel, ulong frame)
    {
        Debug.Assert(!root.IsNull, "walk without a root");
        Debug.Assert(frame < FramesPerTable(rootLevel), "frame outside the tree");
        root.AssertLevel(rootLevel);
        TableRef table = root;
        int level = rootLevel;
        while (true)
        {
            int index = Index(frame, level);
            ulong value = table[index];
            if (!TFormat.IsPresent(value) || TFormat.IsLeaf(value, level))
                return new PteRef(table, index, level, AlignDown(frame, level), value);
            level--;
            table = TableRef.At(TFormat.TableAddress(value), level);
        }
    }

    /// <summary>
    /// Installs <paramref name="leaf"/> at <paramref name="level"/> for <paramref name="frame"/>. Above that
    /// level a missing table is created and a leaf in the way is replaced by a new, empty table; at that
    /// level a table in the way is freed with its subtree.
    /// </summary>
    public static PteRef Map<TPages>(ref TPages pages, TableRef root, int rootLevel, ulong frame, int level, ulong leaf)
        where TPages : struct, ITablePages
    {
        Debug.Assert(TFormat.LeafAllowed(level) && level <= rootLevel, "leaf level not allowed");
        root.AssertLevel(rootLevel);
        TableRef table = root;
        for (int l = rootLevel; l > level; l--)
        {
            int index = Index(frame, l);
            ulong value = table[index];
            if (!TFormat.IsPresent(value) || TFormat.IsLeaf(value, l))
                return MapFrom(ref pages, new PteRef(table, index, l, AlignDown(frame, l), value), frame, level, leaf);
            table = TableRef.At(TFormat.TableAddress(value), l - 1);
        }

        int target = Index(frame, level);
        ulong old = table[target];
        table[target] = leaf;
        if (TFormat.IsPresent(old) && !TFormat.IsLeaf(old, level))
            FreeTree(ref pages, TableRef.At(TFormat.TableAddress(old), level - 1), level - 1);
        return new PteRef(table, target, level, AlignDown(frame, level), leaf);
    }

    /// <summary>
    /// Finishes a mapping from where a <see cref="Walk"/> stopped: <paramref name="at"/> is not present, or
    /// is a leaf to replace, at <paramref name="level"/> or above. Saves walking the upper levels again.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static PteRef MapFrom<TPages>(ref TPages pages, PteRef at, ulong frame, int level, ulong leaf)
        where TPages : struct, ITablePages
    {
        Debug.Assert(at.Level >= level && TFormat.LeafAllowed(level), "cannot map below the stopping point");
        Debug.Assert(!TFormat.IsPresent(at.Current) || TFormat.IsLeaf(at.Current, at.Level),
            "a table in the way would leak");
        PteRef entry = at;
        for (int l = at.Level; l > level; l--)
        {
            // The new table covers exactly what the entry at level l covers.
            TableRef child = pages.Allocate(l - 1, AlignDown(frame, l));
            entry.Write(TFormat.MakeTable(child.Address));
            entry = new PteRef(child, Index(frame, l - 1), l - 1, AlignDown(frame, l - 1), 0); // a new table is zeroed
        }
        return entry.Store(leaf);
    }

    /// <summary>Frees <paramref name="table"/> (at <paramref name="level"/>) and every table below it.
    /// The caller has already unlinked it from its parent.</summary>
    public static void FreeTree<TPages>(ref TPages pages, TableRef table, int level)
        where TPages : struct, ITablePages
    {
        Debug.Assert(!table.IsNull && level >= 1, "bad table");
        table.AssertLevel(level);
        if (level > 1)
        {
            for (int i = 0; i < EntriesPerTable; i++)
            {
                ulong value = table[i];
                if (TFormat.IsPresent(value) && !TFormat.IsLeaf(value, level))
                    FreeTree(ref pages, TableRef.At(TFormat.TableAddress(value), level - 1), level - 1);
            }
        }
        pages.Free(table, level);
    }

    /// <summary>Whether the entry is a present leaf.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLeafEntry(ulong pte, int level) => TFormat.IsPresent(pte) && TFormat.IsLeaf(pte, level);
}
