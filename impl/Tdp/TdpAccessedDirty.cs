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
