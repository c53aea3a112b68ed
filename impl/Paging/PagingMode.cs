namespace MmuSpec.Impl.Paging;

/// <summary>The paging mode in use (SDM Vol. 3 4.1.1).</summary>
public enum PagingMode : byte
{
    /// <summary>32-bit paging: CR0.PG=1, CR4.PAE=0. Two levels of 4-byte entries.</summary>
    Bits32,

    /// <summary>PAE paging: CR4.PAE=1, EFER.LMA=0. PDPTE registers plus two levels of 8-byte entries.</summary>
    Pae,

    /// <summary>4-level paging: EFER.LMA=1, CR4.LA57=0. 48-bit linear addresses.</summary>
    Long4,

    /// <summary>5-level paging: EFER.LMA=1, CR4.LA57=1. 57-bit linear addresses.</summary>
    Long5,
}
