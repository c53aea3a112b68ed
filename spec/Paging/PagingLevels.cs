namespace MmuSpec.Spec.Paging;

/// <summary>
/// Where each level of a walk finds its entry and what an entry at that level can map.
/// Levels are numbered as KVM numbers them: 1 is the page table (PTE), 2 the page directory,
/// 3 the PDPT, 4 the PML4 and 5 the PML5.
/// </summary>
public static class PagingLevels
{
    public static string EntryName(PagingMode mode, int level) => level switch
    {
        1 => "PTE",
        2 => "PDE",
        3 => "PDPTE",
        4 => "PML4E",
        5 => "PML5E",
        _ => throw new ArgumentOutOfRangeException(nameof(level), level, $"no level {level} in {mode.Name()}"),
    };

    /// <summary>
    /// The index into the level's table: 10 bits per level in 32-bit paging (bits 31:22, 21:12;
    /// SDM §4.3), 9 bits per level otherwise (bits 20:12, 29:21, 38:30, 47:39, 56:48; §4.4.2, §4.5),
    /// and 2 bits (31:30) for PAE's PDPTE registers.
    /// </summary>
    public static int Index(PagingMode mode, int level, ulong gva)
    {
        int shift = IndexShift(mode, level);
        if (mode == PagingMode.Bits32) return (int)((gva >> shift) & 0x3FF);
        if (mode == PagingMode.Pae && level == 3) return (int)((gva >> shift) & 0x3);
        return (int)((gva >> shift) & 0x1FF);
    }

    /// <summary>The lowest linear-address bit the index of <paramref name="level"/> covers.</summary>
    public static int IndexShift(PagingMode mode, int level) =>
        mode == PagingMode.Bits32 ? 12 + 10 * (level - 1) : 12 + 9 * (level - 1);

    /// <summary>
    /// Whether a present entry at <paramref name="level"/> maps a page instead of referencing a
    /// table: always at level 1; at level 2 when PS=1 (in 32-bit paging only if CR4.PSE=1, otherwise
    /// PS is ignored, SDM §4.3); at level 3 when PS=1 in IA-32e paging (1 GiB pages, §4.5.4). PS in a
    /// PML4E or PML5E is a reserved bit, caught before this question is asked.
    /// </summary>
    public static bool MapsPage(PagingControls controls, int level, PagingEntry entry) => level switch
    {
        1 => true,
        2 => entry.PageSizeFlag && (controls.Mode != PagingMode.Bits32 || controls.Cr4Pse),
        3 => entry.PageSizeFlag && controls.Mode.IsLongMode(),
        _ => false,
    };

    /// <summary>The size of the page an entry maps at <paramref name="level"/>.</summary>
    public static PageSize PageSizeAt(PagingMode mode, int level) => level switch
    {
        1 => PageSize.Size4K,
        2 => mode == PagingMode.Bits32 ? PageSize.Size4M : PageSize.Size2M,
        3 => PageSize.Size1G,
        _ => throw new ArgumentOutOfRangeException(nameof(level), level, "no page maps at this level"),
    };

    /// <summary>
    /// The physical address an entry holds: the next table's base, or the page frame's base.
    /// 64-bit entries keep bits (MAXPHYADDR-1):12 (or :21, :30 for large pages). A 32-bit entry
    /// keeps bits 31:12; a 4 MiB PDE keeps bits 31:22 and, with PSE-36, bits (M-20):13 as physical
    /// bits (M-1):32 where M = min(MAXPHYADDR, 40) (SDM §4.3, Table 4-4).
    /// </summary>
    public static ulong FrameAddress(PagingControls controls, int level, PagingEntry entry, bool mapsPage)
    {
        ulong raw = entry.Raw;
        int m = controls.MaxPhyAddr;
        if (controls.Mode == PagingMode.Bits32)
        {
            if (!mapsPage || level == 1) return raw & Bits.Range(31, 12);
            int pse36Bits = Math.Min(m, 40) - 32;
            return (raw & Bits.Range(31, 22)) | (((raw >> 13) & Bits.Range(pse36Bits - 1, 0)) << 32);
        }
        int low = mapsPage ? PageSizeAt(controls.Mode, level).Shift() : 12;
        return raw & Bits.Range(m - 1, low);
    }
}
