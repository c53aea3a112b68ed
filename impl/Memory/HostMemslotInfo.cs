namespace MmuSpec.Impl.Memory;

/// <summary>
/// A memslot as the abstract state shows it: frames [BaseGfn, BaseGfn + Pages) backed by host frames
/// from HostPfnBase, on host pages of 2^HostPageShift bytes.
/// </summary>
public readonly record struct HostMemslotInfo(
    int Id, ulong BaseGfn, ulong Pages, ulong HostPfnBase, byte HostPageShift, bool ReadOnly, bool DirtyLogging);
