using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>The four PAE PDPTE registers (SDM 4.4.1), loaded from the PDPT when CR3 is loaded in PAE mode.</summary>
[InlineArray(Count)]
internal struct PdpteRegisters
{
    public const int Count = 4;

    /// <summary>Linear-address bits 31:30 select the register.</summary>
    public const int IndexShift = 30;
    public const int IndexMask = Count - 1;

    private ulong _element0;
}
