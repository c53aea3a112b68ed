using System.Runtime.CompilerServices;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// One memslot: frames [BaseGfn, BaseGfn + Pages) backed by host frames HostPfnBase + (gfn - BaseGfn).
/// Mutable only through the MMU (move, dirty logging).
/// </summary>
internal sealed class HostMemslot
{
    /// <summary>Contains no gfn: the "last slot" cache starts here so lookups need no null check.</summary>
    public static readonly HostMemslot None = new(-1, 0, 0, 0, TableGeometry.PageShift, false, HostMemory.None);

    public HostMemslot(int id, ulong baseGfn, ulong pages, ulong hostPfnBase, byte hostPageShift, bool readOnly, HostMemory host)
    {
        Id = id;
        Host = host;
        Pages = pages;
        HostPfnBase = hostPfnBase;
        HostPageShift = hostPageShift;
        ReadOnly = readOnly;
        MoveTo(baseGfn);
    }

    public int Id { get; }

    public ulong BaseGfn { get; private set; }

    public ulong Pages { get; }

    public ulong HostPfnBase { get; }

    public byte HostPageShift { get; }

    public bool ReadOnly { get; }

    /// <summary>The contents of host frames [HostPfnBase, HostPfnBase + Pages): they stay with the slot when it moves.</summary>
    public HostMemory Host { get; }

    /// <summary>The slot's host frames include <paramref name="hostPfn"/>.</summary>
    public bool HoldsHostFrame(ulong hostPfn) => hostPfn - HostPfnBase < Pages;

    /// <summary>Host frames [hostPfnBase, hostPfnBase + pages) share a frame with this slot's.</summary>
    public bool OverlapsHostFrames(ulong hostPfnBase, ulong pages) =>
        hostPfnBase < HostPfnBase + Pages && HostPfnBase < hostPfnBase + pages;

    /// <summary>Set while dirty logging is on (then <see cref="Dirty"/> is not null).</summary>
    public DirtyBitmap? Dirty { get; private set; }

    public bool DirtyLogging => Dirty is not null;

    public ulong EndGfn => BaseGfn + Pages;

    /// <summary>
    /// Largest leaf level the slot's backing allows, before the policy and the range check:
    /// min(host page level, 3, the largest level at which gfn and host frame are equally aligned,
    /// i.e. hostPfnBase - baseGfn is a multiple of the leaf's frames).
    /// </summary>
    public int LevelCap { get; private set; }

    /// <summary>
    /// The level a TDP fault at <paramref name="gfn"/> maps (docs/tdp-model.md, step 6): 1 while the
    /// slot logs; otherwise the largest L &lt;= min(<paramref name="policyLevel"/>, <see cref="LevelCap"/>)
    /// whose L-sized range around the gfn lies inside the slot. The single- and multi-vCPU TDP MMUs
    /// both ask here.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int TargetLevel(ulong gfn, int policyLevel)
    {
        if (DirtyLogging)
            return 1;
        int level = Math.Min(policyLevel, LevelCap);
        for (; level > 1; level--)
        {
            ulong first = gfn & ~(TableGeometry.FramesPerEntry(level) - 1);
            if (first >= BaseGfn && first + TableGeometry.FramesPerEntry(level) <= EndGfn)
                break;
        }
        return level;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Contains(ulong gfn) => gfn - BaseGfn < Pages; // unsigned wrap: below base is huge

    public void MoveTo(ulong baseGfn)
    {
        BaseGfn = baseGfn;
        int hostLevel = (HostPageShift - TableGeometry.PageShift) / TableGeometry.IndexBits + 1;
        ulong skew = HostPfnBase - baseGfn; // wraps when the host base is below the gfn base; the low bits still tell
        int level = Math.Min(hostLevel, 3);
        while (level > 1 && (skew & (TableGeometry.FramesPerEntry(level) - 1)) != 0)
            level--;
        LevelCap = level;
    }

    /// <summary>
    /// Dirty logging on (an empty bitmap) or off (the bitmap dropped). False, changing nothing, when the
    /// flag already has that value: KVM acts only on a change of KVM_MEM_LOG_DIRTY_PAGES.
    /// </summary>
    public bool SetDirtyLogging(bool on)
    {
        if (on == DirtyLogging)
            return false;
        Dirty = on ? new DirtyBitmap() : null;
        return true;
    }

    /// <summary>Marks <paramref name="gfn"/>, a frame of this slot, dirty when the slot logs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MarkDirty(ulong gfn) => Dirty?.Mark(gfn - BaseGfn);

    public HostMemslotInfo Info => new(Id, BaseGfn, Pages, HostPfnBase, HostPageShift, ReadOnly, DirtyLogging);
}
