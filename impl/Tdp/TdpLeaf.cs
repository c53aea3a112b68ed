using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// The one rule for a leaf's writability bits, used by every leaf <see cref="TdpMmu{TFormat}"/> and the
/// concurrent MMU write (KVM's make_spte and check_spte_writable_invariants, spte.h):
/// host-writable when the host maps the frame writable (the slot is not read-only); MMU-writable when
/// host-writable and no write tracking protects the gfn; W only when MMU-writable. Dirty logging clears W
/// and keeps MMU-writable, so a write fault may restore W without mmu_lock and log the gfn; write tracking
/// clears both, so only the slow path under mmu_lock decides.
/// </summary>
public static class TdpLeaf<TFormat> where TFormat : struct, IPteFormat
{
    /// <summary>A leaf of <paramref name="level"/> mapping <paramref name="hostPfn"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Make(ulong hostPfn, int level, bool hostWritable, bool writeTracked, bool writable)
    {
        bool mmuWritable = hostWritable && !writeTracked;
        Debug.Assert(!writable || mmuWritable, "a writable leaf the MMU may not make writable");
        return TFormat.MakeLeaf(hostPfn, level, writable)
            | (hostWritable ? TFormat.HostWritable : 0)
            | (mmuWritable ? TFormat.MmuWritable : 0);
    }

    /// <summary>A writable leaf of a slot that is not read-only and a gfn nobody tracks (the fast paths' leaf).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeWritable(ulong hostPfn, int level) =>
        TFormat.MakeLeaf(hostPfn, level, writable: true) | TFormat.HostWritable | TFormat.MmuWritable;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsHostWritable(ulong leaf) => (leaf & TFormat.HostWritable) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsMmuWritable(ulong leaf) => (leaf & TFormat.MmuWritable) != 0;

    /// <summary>
    /// The leaf a write-protection fault may install without mmu_lock (KVM's fast_pf_fix_direct_spte): a
    /// present, not writable, MMU-writable leaf with W set; otherwise 0 (the slow path decides).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FastFixed(ulong leaf) =>
        (leaf & TFormat.MmuWritable) != 0 && !TFormat.IsWritable(leaf) ? TFormat.WithWritable(leaf, true) : 0;

    /// <summary>A write-protection fault's fix under mmu_lock: W, and MMU-writable back when no tracking forbids it
    /// any more (the caller checked); needs host-writable.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MadeWritable(ulong leaf)
    {
        Debug.Assert(IsHostWritable(leaf), "a leaf of a read-only slot made writable");
        return TFormat.WithWritable(leaf, true) | TFormat.MmuWritable;
    }

    /// <summary>Dirty logging's write-protection (KVM's wrprot_gfn_range): W goes, MMU-writable stays.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong ProtectedForLog(ulong leaf) => TFormat.WithWritable(leaf, false);

    /// <summary>Write tracking's write-protection (KVM's write_protect_gfn): W and MMU-writable go.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong ProtectedForTracking(ulong leaf) => TFormat.WithWritable(leaf, false) & ~TFormat.MmuWritable;

    /// <summary>Whether the writability bits keep KVM's invariants: W needs MMU-writable, MMU-writable needs host-writable.</summary>
    public static bool KeepsInvariants(ulong leaf) =>
        (!TFormat.IsWritable(leaf) || IsMmuWritable(leaf)) && (!IsMmuWritable(leaf) || IsHostWritable(leaf));
}
