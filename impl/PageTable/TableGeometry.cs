using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// The shape every format shares: 4 KiB tables of 512 eight-byte entries, levels numbered as KVM numbers
/// them (1 = the table of 4 KiB leaves, up to 5). Addresses are handled as frame numbers (address &gt;&gt; 12)
/// in the table's own index space.
/// </summary>
public static class TableGeometry
{
    public const int PageShift = 12;
    public const int TableBytes = 1 << PageShift;
    public const int IndexBits = 9;
    public const int EntriesPerTable = 1 << IndexBits;
    public const int LastIndex = EntriesPerTable - 1;
    public const int MaxLevel = 5;

    /// <summary>log2 of the frames one entry at <paramref name="level"/> covers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int FrameShift(int level) => IndexBits * (level - 1);

    /// <summary>Frames one entry at <paramref name="level"/> covers (1, 512, 2^18, ...).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FramesPerEntry(int level) => 1UL << FrameShift(level);

    /// <summary>log2 of the bytes one entry at <paramref name="level"/> maps (12, 21, 30, ...).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int PageShiftOf(int level) => PageShift + FrameShift(level);

    /// <summary>Frames a whole table at <paramref name="level"/> covers: 2^(9 * level).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FramesPerTable(int level) => 1UL << (IndexBits * level);

    /// <summary>Index of the entry at <paramref name="level"/> that covers <paramref name="frame"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Index(ulong frame, int level) => (int)(frame >> FrameShift(level)) & LastIndex;

    /// <summary>First frame of the entry at <paramref name="level"/> that covers <paramref name="frame"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong AlignDown(ulong frame, int level) => frame & ~(FramesPerEntry(level) - 1);
}
