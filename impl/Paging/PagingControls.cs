namespace MmuSpec.Impl.Paging;

/// <summary>
/// The control-register state that shapes translation. <see cref="MaxPhyAddr"/> must be 36..52.
/// </summary>
/// <param name="Mode">Paging mode (CR0.PG/CR4.PAE/EFER.LMA/CR4.LA57 combined).</param>
/// <param name="Cr0Wp">CR0.WP: supervisor writes honour R/W.</param>
/// <param name="Cr4Pse">CR4.PSE: 4 MiB pages in 32-bit paging.</param>
/// <param name="Cr4Smep">CR4.SMEP.</param>
/// <param name="Cr4Smap">CR4.SMAP.</param>
/// <param name="Cr4Pke">CR4.PKE (effective only in 4/5-level paging).</param>
/// <param name="EferNxe">IA32_EFER.NXE (effective only with 64-bit entries).</param>
/// <param name="EflagsAc">EFLAGS.AC (lifts SMAP for explicit supervisor accesses).</param>
/// <param name="Pkru">PKRU register: AD = bit 2k, WD = bit 2k+1 for key k.</param>
/// <param name="MaxPhyAddr">MAXPHYADDR (CPUID.80000008H:EAX[7:0]).</param>
public readonly record struct PagingControls(
    PagingMode Mode,
    bool Cr0Wp,
    bool Cr4Pse,
    bool Cr4Smep,
    bool Cr4Smap,
    bool Cr4Pke,
    bool EferNxe,
    bool EflagsAc,
    uint Pkru,
    int MaxPhyAddr);
