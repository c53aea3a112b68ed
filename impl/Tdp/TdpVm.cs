using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.Tdp;

/// <summary>Creates a VM's TDP MMU for a format chosen at run time.</summary>
public static class TdpVm
{
    /// <exception cref="ArgumentOutOfRangeException">Unknown format, or a shared bit other than null, 47 or 51.</exception>
    /// <exception cref="ArgumentException">Stage-2 with shared bit 51 (it would need 5 levels).</exception>
    public static ITdpVm Create(TdpFormatKind format, int? sharedBit, NativePagePool pool) =>
        Create(format, sharedBit, pool, TdpAccessedDirty.Untracked);

    /// <summary>As above, with leaves that carry accessed/dirty state as <paramref name="accessedDirty"/> says.</summary>
    public static ITdpVm Create(TdpFormatKind format, int? sharedBit, NativePagePool pool, TdpAccessedDirty accessedDirty) => format switch
    {
        TdpFormatKind.Ept => new TdpMmu<EptFormat>(sharedBit, pool, accessedDirty),
        TdpFormatKind.Stage2 => new TdpMmu<Stage2Format>(sharedBit, pool, accessedDirty),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown TDP format."),
    };

    /// <summary>Bytes in one page header (8: the gfn and the role packed into one word).</summary>
    public static int PageHeaderBytes => TdpMmu<EptFormat>.PageHeaderBytes;
}
