namespace MmuSpec.Spec.Paging;

/// <summary>
/// The four x86 paging modes (SDM Vol. 3 §4.1.1, Table 4-1). The mode decides how many levels a
/// walk has, how wide an entry is and which bits an entry reserves.
/// </summary>
public enum PagingMode
{
    /// <summary>32-bit paging: CR0.PG=1, CR4.PAE=0. Two levels of 4-byte entries; 4 MiB pages with CR4.PSE.</summary>
    Bits32,
    /// <summary>PAE paging: CR4.PAE=1, IA32_EFER.LME=0. Four PDPTE registers, then two levels of 8-byte entries.</summary>
    Pae,
    /// <summary>4-level paging: IA32_EFER.LMA=1, CR4.LA57=0. 48-bit linear addresses.</summary>
    Long4,
    /// <summary>5-level paging: IA32_EFER.LMA=1, CR4.LA57=1. 57-bit linear addresses.</summary>
    Long5,
}

/// <summary>Facts that follow from the paging mode alone.</summary>
public static class PagingModes
{
    /// <summary>The level of the root table: 2 (PD), 3 (PDPT), 4 (PML4) or 5 (PML5). Level 1 is the page table.</summary>
    public static int RootLevel(this PagingMode mode) => mode switch
    {
        PagingMode.Bits32 => 2,
        PagingMode.Pae => 3,
        PagingMode.Long4 => 4,
        PagingMode.Long5 => 5,
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown paging mode"),
    };

    /// <summary>Entries are 4 bytes in 32-bit paging and 8 bytes in every other mode (SDM §4.3, §4.4, §4.5).</summary>
    public static int EntryBytes(this PagingMode mode) => mode == PagingMode.Bits32 ? 4 : 8;

    /// <summary>IA-32e paging (4- or 5-level): the only modes with XD in 64-bit entries, protection keys and canonicality.</summary>
    public static bool IsLongMode(this PagingMode mode) => mode is PagingMode.Long4 or PagingMode.Long5;

    /// <summary>Linear-address width: 32 bits outside IA-32e mode, 48 with 4-level and 57 with 5-level paging.</summary>
    public static int LinearAddressBits(this PagingMode mode) => mode switch
    {
        PagingMode.Long4 => 48,
        PagingMode.Long5 => 57,
        _ => 32,
    };

    /// <summary>Parses the names used on the command line and in JSON: bits32, pae, long4, long5.</summary>
    public static PagingMode Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "bits32" or "32" or "32bit" or "32-bit" => PagingMode.Bits32,
        "pae" => PagingMode.Pae,
        "long4" or "4level" or "4-level" or "la48" => PagingMode.Long4,
        "long5" or "5level" or "5-level" or "la57" => PagingMode.Long5,
        _ => throw new FormatException($"unknown paging mode '{text}' (expected bits32, pae, long4 or long5)"),
    };

    /// <summary>The canonical lower-case name, the inverse of <see cref="Parse"/>.</summary>
    public static string Name(this PagingMode mode) => mode switch
    {
        PagingMode.Bits32 => "bits32",
        PagingMode.Pae => "pae",
        PagingMode.Long4 => "long4",
        PagingMode.Long5 => "long5",
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown paging mode"),
    };
}
