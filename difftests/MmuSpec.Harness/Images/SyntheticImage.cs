using System.Buffers.Binary;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>What <see cref="SyntheticImage.Write"/> built.</summary>
public sealed record SyntheticLayout(PagingMode Mode, ulong Cr3, ulong ImageBytes, int Tables, int Pages4K, int Pages2M, int Pages1G, int ReservedEntries,
    IReadOnlyList<(string Region, ulong Start, PageSize Size, int Pages)> Regions);

/// <summary>
/// Writes a guest-physical memory image (file offset = gpa, like QEMU's pmemsave) holding a
/// Linux-like 4- or 5-level address space: user text, heap and stack in 4K pages, a vmalloc area in
/// 4K pages, kernel text/data in 2M pages and the direct map in 1G pages, with Linux's table and
/// leaf flags. The file is sparse: only the page-table pages are written. Deterministic in its
/// arguments. For tests and for timing <c>mappings</c> on a realistic tree.
/// </summary>
public static class SyntheticImage
{
    /// <summary>Page tables are allocated upward from here.</summary>
    public const ulong TableBase = 0x10_0000;

    const ulong P = 1, W = 2, U = 4, A = 0x20, D = 0x40, PS = 0x80, G = 0x100, NX = 1UL << 63;
    const ulong UserTable = P | W | U | A | D;          // _PAGE_TABLE
    const ulong KernelTable = P | W | A | D;            // _KERNPG_TABLE
    const ulong AddressMask = 0x000F_FFFF_FFFF_F000;

    public static SyntheticLayout Write(string path, PagingMode mode, ulong imageBytes, int pages4K, int pages2M, int pages1G, int reservedEntries = 0, int seed = 1)
    {
        if (!mode.IsLongMode()) throw new ArgumentException("synthetic images are 4- or 5-level (long4/long5)", nameof(mode));
        if ((imageBytes & 0xFFF) != 0 || imageBytes < TableBase + 0x10_0000)
            throw new ArgumentException($"image size must be a multiple of 4 KiB and at least {Hex.Size(TableBase + 0x10_0000)}", nameof(imageBytes));

        var b = new Builder(mode, imageBytes, new Random(seed));
        bool five = mode == PagingMode.Long5;
        var regions = new List<(string, ulong, PageSize, int)>();
        void Region(string name, ulong start, PageSize size, int pages, Func<int, ulong> frame, ulong leafFlags, ulong tableFlags)
        {
            if (pages <= 0) return;
            regions.Add((name, start, size, pages));
            int level = size switch { PageSize.Size4K => 1, PageSize.Size2M => 2, _ => 3 };
            for (int i = 0; i < pages; i++) b.Map(start + (ulong)i * size.Bytes(), level, frame(i), leafFlags, tableFlags);
        }

        int quarter = pages4K / 4;
        Region("user text", 0x40_0000, PageSize.Size4K, quarter, _ => b.DataFrame(), P | U | A, UserTable);
        Region("user heap", 0x5555_5555_8000, PageSize.Size4K, quarter, _ => b.DataFrame(), P | W | U | A | D | NX, UserTable);
        Region("user stack", 0x7fff_f000_0000, PageSize.Size4K, quarter, _ => b.DataFrame(), P | W | U | A | D | NX, UserTable);
        Region("vmalloc", five ? 0xffa0_0000_0000_0000 : 0xffff_c900_0000_0000, PageSize.Size4K, pages4K - 3 * quarter,
            _ => b.DataFrame(), P | W | A | D | G | NX, KernelTable);
        Region("direct map", five ? 0xff11_0000_0000_0000 : 0xffff_8880_0000_0000, PageSize.Size1G, pages1G,
            i => (ulong)i << 30, P | W | A | D | PS | G | NX, KernelTable);
        int text = pages2M / 2;
        Region("kernel text", 0xffff_ffff_8100_0000, PageSize.Size2M, text, i => 0x100_0000 + ((ulong)i << 21), P | A | PS | G, KernelTable);
        Region("kernel data", 0xffff_ffff_8100_0000 + ((ulong)text << 21), PageSize.Size2M, pages2M - text,
            i => 0x100_0000 + ((ulong)(text + i) << 21), P | W | A | D | PS | G | NX, KernelTable);
        // Entries with a reserved bit (bit 51, above any MAXPHYADDR below 52): a dump must skip and count them.
        Region("reserved", 0xffff_ffff_ff00_0000, PageSize.Size4K, reservedEntries, _ => b.DataFrame() | (1UL << 51), P | W | A | NX, KernelTable);

        b.WriteTo(path);
        return new SyntheticLayout(mode, b.Root, imageBytes, b.TableCount, pages4K, pages2M, pages1G, reservedEntries, regions);
    }

    sealed class Builder(PagingMode mode, ulong imageBytes, Random rng)
    {
        readonly Dictionary<ulong, ulong[]> tables = new();
        ulong next = TableBase;

        public ulong Root { get; } = TableBase;
        public int TableCount => tables.Count;

        ulong[] Table(ulong page)
        {
            if (!tables.TryGetValue(page, out var t)) tables[page] = t = new ulong[512];
            return t;
        }

        ulong NewTable()
        {
            ulong page = next;
            next += 0x1000;
            if (next > imageBytes) throw new ArgumentException($"the image is too small for the page tables ({tables.Count} tables)");
            Table(page);
            return page;
        }

        /// <summary>A random 4K frame in the image above the tables (frames are never read, only mapped).</summary>
        public ulong DataFrame()
        {
            ulong low = (TableBase + 0x100_0000) >> 12, high = imageBytes >> 12;
            return (low < high ? (ulong)rng.NextInt64((long)low, (long)high) : low) << 12;
        }

        public void Map(ulong va, int leafLevel, ulong frame, ulong leafFlags, ulong tableFlags)
        {
            if (tables.Count == 0) NewTable();
            ulong table = Root;
            for (int level = mode.RootLevel(); level > leafLevel; level--)
            {
                var t = Table(table);
                int i = PagingLevels.Index(mode, level, va);
                if (t[i] == 0) t[i] = NewTable() | tableFlags;
                else if ((tableFlags & U) != 0) t[i] |= U;     // a table shared by user and kernel paths stays reachable
                table = t[i] & AddressMask;
            }
            Table(table)[PagingLevels.Index(mode, leafLevel, va)] = frame | leafFlags | (leafLevel > 1 ? PS : 0);
        }

        public void WriteTo(string path)
        {
            using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
            f.SetLength((long)imageBytes);
            var page = new byte[4096];
            foreach (var (gpa, entries) in tables.OrderBy(kv => kv.Key))
            {
                for (int i = 0; i < 512; i++) BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(i * 8), entries[i]);
                f.Seek((long)gpa, SeekOrigin.Begin);
                f.Write(page);
            }
        }
    }
}
