namespace MmuSpec.Impl.Tdp;

/// <summary>Whether an MMU's leaves carry accessed/dirty state (docs/tdp-model.md, "Aging").</summary>
public enum TdpAccessedDirty
{
    /// <summary>Not kept: leaves are built as always and aging is rejected.</summary>
    Untracked,

    /// <summary>The hardware sets them: EPTP bit 6 (EPT A bit 8, D bit 9), or stage-2 VTCR_EL2.HA (AF bit 10).</summary>
    Enabled,

    /// <summary>No hardware A/D: EPT aging zaps (KVM access-tracks); stage-2 keeps AF in software (access-flag faults).</summary>
    Disabled,
}

/// <summary>
/// The leaf bits a <see cref="TdpAccessedDirty"/> mode keeps, one rule for both TDP MMUs (TdpMmu.Aging.cs,
/// ConcurrentTdpMmu.Aging.cs).
/// </summary>
/// <param name="Accessed">The bit an access sets and aging clears; 0 when none is kept (untracked, or EPT without
/// A/D, where every present leaf counts as young and aging zaps).</param>
/// <param name="Dirty">The bit a write sets: EPT D with A/D enabled, else 0 (KVM arm64 keeps no hardware dirty state).</param>
/// <param name="SoftwareAccessed">An access through an old leaf is a fault (stage-2 without VTCR_EL2.HA: an access-flag fault).</param>
internal readonly record struct TdpAccessedDirtyBits(ulong Accessed, ulong Dirty, bool SoftwareAccessed)
{
    public static TdpAccessedDirtyBits Of<TFormat>(TdpAccessedDirty mode) where TFormat : struct, PageTable.IPteFormat
    {
        if (mode is not (TdpAccessedDirty.Untracked or TdpAccessedDirty.Enabled or TdpAccessedDirty.Disabled))
            ThrowHelper.ArgumentOutOfRange(nameof(mode), "Unknown accessed/dirty mode.");
        bool ept = typeof(TFormat) == typeof(PageTable.EptFormat);
        return new(
            mode == TdpAccessedDirty.Untracked || (ept && mode == TdpAccessedDirty.Disabled) ? 0 : TFormat.AccessedBit,
            mode == TdpAccessedDirty.Enabled ? TFormat.DirtyBit : 0,
            mode == TdpAccessedDirty.Disabled && !ept);
    }
}
