using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Shadow;

/// <summary>Creates a VM's shadow MMU (docs/shadow-model.md).</summary>
public static class ShadowVm
{
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPhyAddr"/> is outside 36..52.</exception>
    /// <param name="prefetch">A fill also maps its free neighbours (KVM's pte_prefetch; docs/shadow-model.md, "Prefetch").</param>
    public static IShadowVm Create(int maxPhyAddr, bool allowUnsync, NativePagePool pool, ShadowRootPolicy rootPolicy = ShadowRootPolicy.KeepAndResync,
        bool prefetch = false) =>
        new ShadowMmu(maxPhyAddr, allowUnsync, pool, rootPolicy, prefetch);

    /// <summary>
    /// Bytes per cached root (the current one and three previous per vCPU): a pgd word whose bit 63 holds the
    /// unsync flag and a root pointer, as KVM's kvm_mmu_root_info. A PAE/32-bit root's pointer names one of four
    /// 64-byte blocks (its four pages and role) in a page allocated with the MMU.
    /// </summary>
    public static int RootInfoBytes => Unsafe.SizeOf<RootInfo>();

    /// <summary>
    /// Bookkeeping bytes per direct page besides its 4 KiB table: the 24-byte header (key and flags, parent
    /// list head, hash link). Slab overhead, not counted: a 4 KiB header page per 63 direct pages.
    /// </summary>
    public static int DirectPageHeaderBytes => ShadowPageHeader.Bytes;

    /// <summary>
    /// Bookkeeping bytes per indirect page besides its 4 KiB table: the 24-byte header, the 4 KiB per-entry
    /// translations page and the 72-byte indirect data (unsync-children bitmap and count, write-flooding
    /// count). Slab overhead, not counted: a header page and one unused page per 31 indirect pages.
    /// </summary>
    public static int IndirectPageBytes => ShadowPageHeader.Bytes + ShadowPage.Entries * sizeof(ulong) + IndirectExtra.Bytes;
}
