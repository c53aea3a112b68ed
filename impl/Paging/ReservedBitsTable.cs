using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// Reserved-bit masks indexed [PS bit][level] (KVM __reset_rsvds_bits_mask; SDM 4.3-4.5 tables).
/// Levels use KVM numbering: 1 = PT ... 5 = PML5. Indexing by the entry's own bit 7 lets one AND decide
/// "reserved bit set" for both table-pointing and large-page entries without a branch.
/// </summary>
[InlineArray(Entries)]
internal struct ReservedBitsTable
{
    /// <summary>Level slots 0..5 (slot 0 unused) so a level indexes directly.</summary>
    public const int LevelSlots = 6;
    public const int Entries = 2 * LevelSlots;

    private const int Bits32Pse36Cap = 40;          // SDM 4.3: PSE-36 covers at most 40 physical bits
    private const int Pse36ReservedHigh = 21;       // 4 MiB PDE bits 21:(M'-19)
    private const int Pse36ReservedOffset = 19;
    private const int LargePageReservedLow = 13;    // bit 12 is PAT in large-page entries
    private const int TwoMiBReservedHigh = 20;
    private const int OneGiBReservedHigh = 29;
    private const int PaeEntryReservedHigh = 62;    // PAE PDE/PTE: bits 62:M
    private const int LongEntryReservedHigh = 51;   // 4/5-level: bits 51:M (62:52 ignored)

    private ulong _element0;

    public static ReservedBitsTable Create(in PagingControls c)
    {
        ReservedBitsTable t = default;
        int m = c.MaxPhyAddr;
        ulong noExecute = c.EferNxe ? 0 : PagingEntryBits.NoExecute; // XD is reserved when NXE=0

        switch (c.Mode)
        {
            case PagingMode.Bits32:
                // No reserved bits in PTEs and 4 KiB-table PDEs; 4 MiB PDEs only exist with CR4.PSE.
                if (c.Cr4Pse)
                {
                    int capped = Math.Min(m, Bits32Pse36Cap);
                    t.Set(1, 2, BitRange.Mask(capped - Pse36ReservedOffset, Pse36ReservedHigh));
                }
                break;

            case PagingMode.Pae:
            {
                ulong high = BitRange.Mask(m, PaeEntryReservedHigh) | noExecute;
                t.SetBoth(1, high);
                t.Set(0, 2, high);
                t.Set(1, 2, high | BitRange.Mask(LargePageReservedLow, TwoMiBReservedHigh));
                break;
            }

            case PagingMode.Long4:
            case PagingMode.Long5:
            {
                ulong high = BitRange.Mask(m, LongEntryReservedHigh) | noExecute;
                t.SetBoth(1, high);
                t.Set(0, 2, high);
                t.Set(1, 2, high | BitRange.Mask(LargePageReservedLow, TwoMiBReservedHigh));
                t.Set(0, 3, high);
                t.Set(1, 3, high | BitRange.Mask(LargePageReservedLow, OneGiBReservedHigh));
                // PS is reserved in PML4Es and PML5Es.
                t.SetBoth(4, high | PagingEntryBits.PageSize);
                t.SetBoth(5, high | PagingEntryBits.PageSize);
                break;
            }
        }
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly ulong Mask(int pageSizeBit, int level) => this[pageSizeBit * LevelSlots + level];

    private void Set(int pageSizeBit, int level, ulong mask) => this[pageSizeBit * LevelSlots + level] = mask;

    private void SetBoth(int level, ulong mask)
    {
        Set(0, level, mask);
        Set(1, level, mask);
    }
}
