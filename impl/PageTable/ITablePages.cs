namespace MmuSpec.Impl.PageTable;

/// <summary>
/// Where tables come from and go back to. Implemented by a struct (passed by <c>ref</c> as a constrained
/// type parameter) so the walker's calls inline. The owner decides what a table carries besides its
/// entries (e.g. a page header keyed by the frames it covers).
/// </summary>
internal interface ITablePages
{
    /// <summary>A zeroed table at <paramref name="level"/> whose entries cover frames from
    /// <paramref name="firstFrame"/> (in the tree's index space).</summary>
    TableRef Allocate(int level, ulong firstFrame);

    /// <summary>Takes back a table at <paramref name="level"/> that is no longer referenced (its entries may still be set).</summary>
    void Free(TableRef table, int level);
}
