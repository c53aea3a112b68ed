namespace MmuSpec.Bench;

/// <summary>Paging mode under test; mapped onto the spec's and the impl's own enums.</summary>
public enum Mode
{
    Bits32,
    Pae,
    Long4,
    Long5,
}

/// <summary>Leaf size: a 4 KiB page (PTE), or a large page at the PDE (4 MiB in 32-bit paging with PSE, else 2 MiB).</summary>
public enum Page
{
    Small4K,
    Large,
}

/// <summary>One paging-structure entry to store: the same list is written into both memories.</summary>
public readonly record struct EntryWrite(ulong Gpa, ulong Value, int Size);

/// <summary>
/// A page-table tree mapping <see cref="Count"/> consecutive pages through one chain of tables: every
/// level above the leaf uses a single (non-zero) index, the leaf table holds <see cref="Count"/>
/// consecutive leaf entries. Every entry already has A set (and the leaves D), so a walk that is
/// allowed writes nothing back: the benchmarks measure warm walks, not A/D updates. Plain data,
/// built once and applied identically to the spec's and the impl's memory.
/// </summary>
public sealed class PageTableLayout
{
    /// <summary>The memslot holding the tables: gfn 0x100 (gpa 1 MiB), 16 pages.</summary>
    public const ulong SlotBaseGfn = 0x100, SlotPages = 16;

    /// <summary>Where the leaves point: data frames need no backing, the walk never touches them.</summary>
    public const ulong FrameBase = 0x4000_0000;

    const ulong P = 1UL << 0, Rw = 1UL << 1, Us = 1UL << 2, A = 1UL << 5, D = 1UL << 6, Ps = 1UL << 7;
    const ulong TableFlags = P | Rw | Us | A;
    const ulong LeafFlags = P | Rw | Us | A | D;

    public PageTableLayout(Mode mode, Page page, int count)
    {
        Mode = mode;
        Page = page;
        Count = count;
        int entrySize = mode == Mode.Bits32 ? 4 : 8;
        int rootLevel = mode switch { Mode.Bits32 => 2, Mode.Pae => 3, Mode.Long4 => 4, _ => 5 };
        int leafLevel = page == Page.Small4K ? 1 : 2;
        PageShift = Shift(mode, leafLevel);

        // A distinct, non-zero index per level; the top index stays below 256 so long-mode gvas are
        // canonical in the lower half. PAE's level 3 has only 4 entries.
        int IndexAt(int level) => mode == Mode.Pae && level == 3 ? 2 : level * 37 + 3;

        ulong gvaHigh = 0;
        for (int level = rootLevel; level > leafLevel; level--)
            gvaHigh |= (ulong)IndexAt(level) << Shift(mode, level);

        ulong nextTable = SlotBaseGfn << 12;
        ulong table = nextTable;
        Cr3 = table;
        var writes = new List<EntryWrite>();
        for (int level = rootLevel; level > leafLevel; level--)
        {
            nextTable += 0x1000;
            // PAE PDPTEs: only P; bits 2:1 and 8:5 (R/W, U/S, A...) are reserved there.
            ulong flags = mode == Mode.Pae && level == 3 ? P : TableFlags;
            writes.Add(new EntryWrite(table + (ulong)(IndexAt(level) * entrySize), nextTable | flags, entrySize));
            table = nextTable;
        }
        if ((nextTable >> 12) >= SlotBaseGfn + SlotPages)
            throw new InvalidOperationException("page tables do not fit in the memslot");

        Gvas = new ulong[count];
        ExpectedGpas = new ulong[count];
        ulong pageBytes = 1UL << PageShift;
        for (int i = 0; i < count; i++)
        {
            int leafIndex = IndexAt(leafLevel) + i;
            ulong frame = FrameBase + (ulong)i * pageBytes;
            ulong leaf = frame | LeafFlags | (leafLevel == 1 ? 0 : Ps);
            writes.Add(new EntryWrite(table + (ulong)(leafIndex * entrySize), leaf, entrySize));
            ulong offset = ((ulong)i * 0x48 + 0x10) & (pageBytes - 1);
            Gvas[i] = gvaHigh | ((ulong)leafIndex << PageShift) | offset;
            ExpectedGpas[i] = frame | offset;
        }
        if (IndexAt(leafLevel) + count > (mode == Mode.Bits32 ? 1024 : 512))
            throw new InvalidOperationException("leaf entries overflow their table");
        Writes = writes;
    }

    public Mode Mode { get; }
    public Page Page { get; }
    public int Count { get; }

    /// <summary>CR3: the root table (the PDPT in PAE).</summary>
    public ulong Cr3 { get; }

    /// <summary>log2 of the leaf page size: 12, 21 or 22.</summary>
    public int PageShift { get; }

    public IReadOnlyList<EntryWrite> Writes { get; }
    public ulong[] Gvas { get; }
    public ulong[] ExpectedGpas { get; }

    /// <summary>Linear-address bit where the index of <paramref name="level"/> starts.</summary>
    static int Shift(Mode mode, int level) => mode == Mode.Bits32 ? 12 + 10 * (level - 1) : 12 + 9 * (level - 1);
}
