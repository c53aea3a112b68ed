using System.Collections.Immutable;
using MmuSpec.Spec.Memory;

namespace MmuSpec.Spec.Paging;

/// <summary>
/// The paging state of a vCPU: control flags, CR3, and (PAE only) the four PDPTE registers that
/// MOV CR3 loads from guest memory (SDM §4.4.1). Later guest writes to the PDPT do not affect
/// translations until CR3 is loaded again.
/// </summary>
public sealed record CpuState
{
    public CpuState(PagingControls controls, ulong cr3, IEnumerable<ulong>? pdptes = null)
    {
        Controls = controls ?? throw new ArgumentNullException(nameof(controls));
        Cr3 = cr3;
        Pdptes = pdptes?.ToImmutableArray() ?? ImmutableArray.Create(0UL, 0UL, 0UL, 0UL);
        if (Pdptes.Length != 4) throw new ArgumentException("PAE has exactly four PDPTE registers", nameof(pdptes));
    }

    public PagingControls Controls { get; }
    public ulong Cr3 { get; }
    /// <summary>PAE's PDPTE registers; all zero in other modes.</summary>
    public ImmutableArray<ulong> Pdptes { get; }

    public CpuState WithControls(PagingControls value) => new(value, Cr3, Pdptes);
    public CpuState WithCr3(ulong value) => new(Controls, value, Pdptes);
    public CpuState WithPdptes(IEnumerable<ulong> value) => new(Controls, Cr3, value);

    public bool Equals(CpuState? other) =>
        other is not null && Controls.Equals(other.Controls) && Cr3 == other.Cr3 && Pdptes.SequenceEqual(other.Pdptes);
    public override int GetHashCode() => HashCode.Combine(Controls, Cr3, Pdptes[0], Pdptes[1], Pdptes[2], Pdptes[3]);

    /// <summary>
    /// The root table's physical address: CR3 bits 31:12 in 32-bit paging, 31:5 (the PDPT) in PAE,
    /// bits (MAXPHYADDR-1):12 in IA-32e paging (SDM §4.3, §4.4.1, §4.5).
    /// </summary>
    public ulong RootTableAddress => Controls.Mode switch
    {
        PagingMode.Bits32 => Cr3 & Bits.Range(31, 12),
        PagingMode.Pae => Cr3 & Bits.Range(31, 5),
        _ => Cr3 & Bits.Range(Controls.MaxPhyAddr - 1, 12),
    };

    /// <summary>
    /// MOV CR3 (SDM §4.4.1, §4.5): the new state, or the reason for #GP (state unchanged). Outside
    /// IA-32e mode CR3 is a 32-bit register: a wider value is a caller error, not a guest event.
    /// </summary>
    public static CpuStateOrGp LoadCr3(PagingControls controls, ulong cr3, GuestMemory memory)
    {
        if (!controls.Mode.IsLongMode() && cr3 > uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(cr3), cr3, $"CR3 is 32 bits wide in {controls.Mode.Name()} paging");
        if (controls.Mode.IsLongMode() && (cr3 & ReservedBits.LongModeCr3Mask(controls)) != 0)
            return CpuStateOrGp.Gp(GpReason.Cr3ReservedBits);
        if (controls.Mode != PagingMode.Pae)
            return CpuStateOrGp.Ok(new CpuState(controls, cr3));

        // PAE: the four PDPTEs are read now, checked now, and kept in registers.
        ulong pdpt = cr3 & Bits.Range(31, 5);
        var pdptes = new ulong[4];
        for (int i = 0; i < 4; i++)
        {
            if (memory.Read64(pdpt + 8 * (ulong)i) is not { } pdpte) return CpuStateOrGp.Gp(GpReason.PdptNotInMemory);
            if (new PagingEntry(pdpte).Present && (pdpte & ReservedBits.PaePdpteMask(controls)) != 0)
                return CpuStateOrGp.Gp(GpReason.PdpteReservedBits);
            pdptes[i] = pdpte;
        }
        return CpuStateOrGp.Ok(new CpuState(controls, cr3, pdptes));
    }

    public override string ToString() =>
        $"{Controls}, CR3={Bits.Hex(Cr3)}" + (Controls.Mode == PagingMode.Pae ? $", PDPTEs=[{string.Join(", ", Pdptes.Select(Bits.Hex))}]" : "");
}

/// <summary>Either a new CPU state or the reason the instruction raised #GP.</summary>
public sealed record CpuStateOrGp(CpuState? State, GpReason? Fault)
{
    public static CpuStateOrGp Ok(CpuState state) => new(state, null);
    public static CpuStateOrGp Gp(GpReason reason) => new(null, reason);
    public bool IsOk => State is not null;
}
