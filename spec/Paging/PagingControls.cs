namespace MmuSpec.Spec.Paging;

/// <summary>
/// The control-register state that decides how a linear address is translated: the paging mode
/// and every flag of CR0, CR4, IA32_EFER, EFLAGS and PKRU that the SDM's paging rules read
/// (SDM Vol. 3 §4.1.3, §4.6), plus the CPU's MAXPHYADDR (CPUID.80000008H:EAX[7:0]).
/// Immutable; change it with the <c>WithX</c> methods (F# cannot use C#'s <c>with</c>).
/// </summary>
public sealed record PagingControls
{
    /// <summary>Smallest and largest MAXPHYADDR this model accepts.</summary>
    public const int MinMaxPhyAddr = 36, MaxMaxPhyAddr = 52;

    public PagingControls(
        PagingMode mode,
        bool cr0Wp = false,
        bool cr4Pse = false,
        bool cr4Smep = false,
        bool cr4Smap = false,
        bool cr4Pke = false,
        bool eferNxe = false,
        bool eflagsAc = false,
        uint pkru = 0,
        int maxPhyAddr = 46)
    {
        if (!Enum.IsDefined(mode))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown paging mode");
        if (maxPhyAddr is < MinMaxPhyAddr or > MaxMaxPhyAddr)
            throw new ArgumentOutOfRangeException(nameof(maxPhyAddr), maxPhyAddr, $"MAXPHYADDR must be between {MinMaxPhyAddr} and {MaxMaxPhyAddr}");
        Mode = mode; Cr0Wp = cr0Wp; Cr4Pse = cr4Pse; Cr4Smep = cr4Smep; Cr4Smap = cr4Smap;
        Cr4Pke = cr4Pke; EferNxe = eferNxe; EflagsAc = eflagsAc; Pkru = pkru; MaxPhyAddr = maxPhyAddr;
    }

    public PagingMode Mode { get; }
    /// <summary>CR0.WP: supervisor writes honour R/W (SDM §4.6.1).</summary>
    public bool Cr0Wp { get; }
    /// <summary>CR4.PSE: 4 MiB pages in 32-bit paging (SDM §4.3).</summary>
    public bool Cr4Pse { get; }
    /// <summary>CR4.SMEP: no supervisor fetches from user-mode addresses.</summary>
    public bool Cr4Smep { get; }
    /// <summary>CR4.SMAP: no supervisor data accesses to user-mode addresses unless EFLAGS.AC overrides.</summary>
    public bool Cr4Smap { get; }
    /// <summary>CR4.PKE: protection keys for user-mode addresses (IA-32e paging only).</summary>
    public bool Cr4Pke { get; }
    /// <summary>IA32_EFER.NXE: bit 63 of 64-bit entries is XD; when clear bit 63 is reserved.</summary>
    public bool EferNxe { get; }
    /// <summary>EFLAGS.AC: lets explicit supervisor accesses through SMAP.</summary>
    public bool EflagsAc { get; }
    /// <summary>PKRU: for key k, bit 2k is AD (access disable), bit 2k+1 is WD (write disable).</summary>
    public uint Pkru { get; }
    /// <summary>MAXPHYADDR: physical-address width; bits at and above it are reserved in entries.</summary>
    public int MaxPhyAddr { get; }

    public PagingControls WithMode(PagingMode value) => new(value, Cr0Wp, Cr4Pse, Cr4Smep, Cr4Smap, Cr4Pke, EferNxe, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithCr0Wp(bool value) => new(Mode, value, Cr4Pse, Cr4Smep, Cr4Smap, Cr4Pke, EferNxe, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithCr4Pse(bool value) => new(Mode, Cr0Wp, value, Cr4Smep, Cr4Smap, Cr4Pke, EferNxe, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithCr4Smep(bool value) => new(Mode, Cr0Wp, Cr4Pse, value, Cr4Smap, Cr4Pke, EferNxe, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithCr4Smap(bool value) => new(Mode, Cr0Wp, Cr4Pse, Cr4Smep, value, Cr4Pke, EferNxe, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithCr4Pke(bool value) => new(Mode, Cr0Wp, Cr4Pse, Cr4Smep, Cr4Smap, value, EferNxe, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithEferNxe(bool value) => new(Mode, Cr0Wp, Cr4Pse, Cr4Smep, Cr4Smap, Cr4Pke, value, EflagsAc, Pkru, MaxPhyAddr);
    public PagingControls WithEflagsAc(bool value) => new(Mode, Cr0Wp, Cr4Pse, Cr4Smep, Cr4Smap, Cr4Pke, EferNxe, value, Pkru, MaxPhyAddr);
    public PagingControls WithPkru(uint value) => new(Mode, Cr0Wp, Cr4Pse, Cr4Smep, Cr4Smap, Cr4Pke, EferNxe, EflagsAc, value, MaxPhyAddr);
    public PagingControls WithMaxPhyAddr(int value) => new(Mode, Cr0Wp, Cr4Pse, Cr4Smep, Cr4Smap, Cr4Pke, EferNxe, EflagsAc, Pkru, value);

    // Architectural bit positions of the registers, used only to decode raw register values.
    const int Cr0PgBit = 31, Cr0WpBit = 16;
    const int Cr4PseBit = 4, Cr4PaeBit = 5, Cr4La57Bit = 12, Cr4SmepBit = 20, Cr4SmapBit = 21, Cr4PkeBit = 22;
    const int EferLmeBit = 8, EferLmaBit = 10, EferNxeBit = 11;
    const int RflagsAcBit = 18;

    /// <summary>
    /// Decodes raw register values as a debugger prints them. The mode follows SDM Table 4-1:
    /// CR0.PG=0 is rejected (no paging, nothing to walk); CR4.PAE=0 is 32-bit paging; EFER.LMA (or
    /// LME, since a dump taken with paging on has both) selects IA-32e paging, CR4.LA57 5-level.
    /// </summary>
    public static PagingControls FromRegisters(ulong cr0, ulong cr4, ulong efer, ulong rflags = 0, uint pkru = 0, int maxPhyAddr = 46)
    {
        if (!Bits.Test(cr0, Cr0PgBit))
            throw new ArgumentException($"CR0 {Bits.Hex(cr0)} has PG=0: paging is off, there is nothing to walk", nameof(cr0));
        bool pae = Bits.Test(cr4, Cr4PaeBit);
        bool lma = Bits.Test(efer, EferLmaBit) || Bits.Test(efer, EferLmeBit);
        if (lma && !pae)
            throw new ArgumentException($"EFER {Bits.Hex(efer)} enables long mode but CR4 {Bits.Hex(cr4)} has PAE=0, which the CPU refuses", nameof(cr4));
        var mode = !pae ? PagingMode.Bits32 : !lma ? PagingMode.Pae : Bits.Test(cr4, Cr4La57Bit) ? PagingMode.Long5 : PagingMode.Long4;
        return new PagingControls(mode,
            cr0Wp: Bits.Test(cr0, Cr0WpBit),
            cr4Pse: Bits.Test(cr4, Cr4PseBit),
            cr4Smep: Bits.Test(cr4, Cr4SmepBit),
            cr4Smap: Bits.Test(cr4, Cr4SmapBit),
            cr4Pke: Bits.Test(cr4, Cr4PkeBit),
            eferNxe: Bits.Test(efer, EferNxeBit),
            eflagsAc: Bits.Test(rflags, RflagsAcBit),
            pkru: pkru,
            maxPhyAddr: maxPhyAddr);
    }

    public override string ToString()
    {
        var flags = new List<string> { Mode.Name() };
        if (Cr0Wp) flags.Add("WP");
        if (Cr4Pse) flags.Add("PSE");
        if (Cr4Smep) flags.Add("SMEP");
        if (Cr4Smap) flags.Add("SMAP");
        if (Cr4Pke) flags.Add("PKE");
        if (EferNxe) flags.Add("NXE");
        if (EflagsAc) flags.Add("AC");
        if (Pkru != 0) flags.Add($"PKRU={Bits.Hex(Pkru)}");
        flags.Add($"MAXPHYADDR={MaxPhyAddr}");
        return string.Join(' ', flags);
    }
}
