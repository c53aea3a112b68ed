namespace MmuSpec.Impl.Tdp;

/// <summary>Which entry format the MMU's tables use. The abstract state does not depend on it.</summary>
public enum TdpFormatKind
{
    /// <summary>x86 EPT (<see cref="PageTable.EptFormat"/>).</summary>
    Ept,

    /// <summary>Arm64 stage-2, 4 KiB granule (<see cref="PageTable.Stage2Format"/>).</summary>
    Stage2,
}
