using System.Runtime.CompilerServices;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Binds the page allocator to one root for <see cref="RadixTable{TFormat}"/>: the walker hands over
/// the frame a new table covers in the root's index space, and this turns it into the page's key.
/// A struct, so the walker's calls inline.
/// </summary>
internal readonly struct TdpTablePages(TdpPageAllocator allocator, ulong sharedGfnMask, bool mirror) : ITablePages
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TableRef Allocate(int level, ulong firstFrame) =>
        // The direct root indexes by gfn with the shared bit added back; a page's gfn never holds it
        // (the GFN-direct-bits series, Rick Edgecombe, 2024). Mirror frames never have it, so the mask changes nothing there.
        allocator.Allocate(firstFrame & ~sharedGfnMask, level, mirror);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(TableRef table, int level) => allocator.Free(table, level);
}
