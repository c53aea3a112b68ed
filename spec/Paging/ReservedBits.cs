namespace MmuSpec.Spec.Paging;

/// <summary>
/// Which bits of a present entry must be zero. A set reserved bit stops the walk with #PF and
/// RSVD=1 (SDM §4.7); for PAE's PDPTEs it makes the load of CR3 fail with #GP instead (§4.4.1).
/// All reserved-bit rules of the model live here.
/// </summary>
public static class ReservedBits
{
    /// <summary>
    /// The reserved bits of a present entry at <paramref name="level"/>, given whether the entry maps
    /// a page (<see cref="PagingLevels.MapsPage"/>). M is MAXPHYADDR.
    /// </summary>
    public static ulong Mask(PagingControls controls, int level, bool mapsPage)
    {
        int m = controls.MaxPhyAddr;
        switch (controls.Mode)
        {
            case PagingMode.Bits32:
                // SDM Table 4-4: a 4 MiB PDE reserves bits 21:(M-19) with M = min(MAXPHYADDR, 40),
                // the bits between PSE-36's high address bits and bit 22. PTEs and PDEs that
                // reference a table reserve nothing. (KVM hard-codes bits 21:17, i.e. M = 36.)
                return level == 2 && mapsPage ? Bits.Range(21, Math.Min(m, 40) - 19) : 0;

            case PagingMode.Pae:
                // SDM Tables 4-8..4-11: bits 62:M; bit 63 unless EFER.NXE (then it is XD);
                // a 2 MiB PDE also reserves bits 20:13 (below its frame, above PAT).
                return Bits.Range(62, m) | NoXdBit(controls)
                    | (level == 2 && mapsPage ? Bits.Range(20, 13) : 0);

            default:
                // SDM Tables 4-14..4-20: bits 51:M (62:52 are ignored or the protection key);
                // bit 63 unless EFER.NXE; PS in a PML5E/PML4E; a 1 GiB PDPTE bits 29:13; a 2 MiB PDE
                // bits 20:13.
                ulong mask = Bits.Range(51, m) | NoXdBit(controls);
                if (level >= 4) mask |= 1UL << PagingEntry.PageSizeBit;
                if (level == 3 && mapsPage) mask |= Bits.Range(29, 13);
                if (level == 2 && mapsPage) mask |= Bits.Range(20, 13);
                return mask;
        }
    }

    /// <summary>
    /// PAE PDPTE, checked when CR3 is loaded (SDM §4.4.1, Table 4-8): bits 2:1, 8:5 and 63:M.
    /// PDPTEs have no R/W, U/S, A or XD bits.
    /// </summary>
    public static ulong PaePdpteMask(PagingControls controls) =>
        Bits.Range(63, controls.MaxPhyAddr) | Bits.Range(8, 5) | Bits.Range(2, 1);

    /// <summary>CR3 in IA-32e paging reserves bits 63:M; MOV CR3 with one set is #GP (SDM §4.5, Table 4-12).</summary>
    public static ulong LongModeCr3Mask(PagingControls controls) => Bits.Range(63, controls.MaxPhyAddr);

    static ulong NoXdBit(PagingControls controls) => controls.EferNxe ? 0 : 1UL << PagingEntry.XdBit;
}
