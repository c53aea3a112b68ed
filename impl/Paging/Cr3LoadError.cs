namespace MmuSpec.Impl.Paging;

/// <summary>Why MOV CR3 raises #GP (SDM 4.4.1, KVM kvm_set_cr3 / load_pdptrs).</summary>
public enum Cr3Fault : byte
{
    None,

    /// <summary>CR3 sets bits at or above MAXPHYADDR (4/5-level paging).</summary>
    ReservedBits,

    /// <summary>PAE: the PDPT lies outside every memslot, so the PDPTE registers cannot be loaded.</summary>
    PdptUnbacked,

    /// <summary>PAE: a present PDPTE sets reserved bits.</summary>
    PdpteReservedBits,
}

/// <summary>
/// The reason of a refused MOV CR3 (<see cref="GuestVcpu.TryBoot"/>): for PAE, the PDPTE that could not
/// be loaded (<paramref name="PdpteIndex"/> 0..3 at <paramref name="PdpteGpa"/>, its value and the reserved
/// bits it sets); for CR3 itself, the reserved bits of CR3 (index -1).
/// </summary>
public readonly record struct Cr3LoadError(Cr3Fault Fault, int PdpteIndex, ulong PdpteGpa, ulong Pdpte, ulong ReservedBits);
