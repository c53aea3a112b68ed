using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>Per-level geometry: where the index sits in the linear address and how a leaf yields its page base.</summary>
internal readonly struct LevelShape(int shift, ulong leafAddressMask, ulong pse36Mask)
{
    /// <summary>Lowest linear-address bit indexed at this level; also log2 of a leaf's page size.</summary>
    public readonly int Shift = shift;

    /// <summary>Entry bits forming the page base when this level is a leaf.</summary>
    public readonly ulong LeafAddressMask = leafAddressMask;

    /// <summary>
    /// PSE-36 (32-bit paging 4 MiB pages): entry bits above bit 13 that become physical bits 32 and up.
    /// Zero everywhere else, so the shift/AND/OR it costs is a no-op outside 32-bit paging.
    /// </summary>
    public readonly ulong Pse36Mask = pse36Mask;
}

/// <summary>Level shapes indexed by KVM level number (slot 0 unused).</summary>
[InlineArray(ReservedBitsTable.LevelSlots)]
internal struct LevelShapeTable
{
    private LevelShape _element0;
}
