using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Aging (docs/tdp-model.md, "Aging"): accessed/dirty bits in leaves, set by the access path as the CPU
/// would set them, and kvm_age_gfn / kvm_test_age_gfn over a gfn range (KVM's kvm_tdp_mmu_age_gfn_range,
/// kvm_tdp_mmu_test_age_gfn).
/// </summary>
public sealed partial class TdpMmu<TFormat>
{
    private TdpAccessedDirty _accessedDirty;

    // The bit an access sets and aging clears: 0 when the MMU keeps none (untracked, or EPT without A/D,
    // where every present leaf counts as young and aging zaps). Non-zero turns the fast paths off.
    private ulong _accessedMask;

    // The bit a write sets: EPT D with A/D enabled, else 0.
    private ulong _dirtyMask;

    // An access through an old leaf is a fault (stage-2 without VTCR_EL2.HA: an access-flag fault).
    private bool _softwareAccessed;

    // A pre-fault's fallback to the fault handler: a prefetch, which installs leaves without A (KVM's
    // make_spte with prefetch) and sets nothing on a hit.
    private bool _prefetching;

    private void SetAccessedDirty(TdpAccessedDirty mode)
    {
        var bits = TdpAccessedDirtyBits.Of<TFormat>(mode);
        _accessedDirty = mode;
        (_accessedMask, _dirtyMask, _softwareAccessed) = (bits.Accessed, bits.Dirty, bits.SoftwareAccessed);
    }

    /// <summary>Whether leaves carry accessed/dirty state, and how.</summary>
    public TdpAccessedDirty AccessedDirty => _accessedDirty;

    /// <summary>The bits a leaf a fault installs gets besides the format's own: young (and dirty for a write), unless prefetched.</summary>
    private ulong InstallBits(bool write) => _prefetching ? 0 : _accessedMask | (write ? _dirtyMask : 0);

    /// <summary>
    /// The CPU's part of an access through the leaf at <paramref name="pte"/>: A, and D for a write. Returns
    /// whether the access was a fault: an old leaf without hardware A/D (arm64's handle_access_fault).
    /// </summary>
    private bool Touch(PteRef pte, bool write)
    {
        if (_prefetching)
            return false;
        ulong value = pte.Current; // the fault path may have just written it
        ulong young = value | _accessedMask | (write ? _dirtyMask : 0);
        if (young == value)
            return false;
        pte.Write(young);
        return (value & _accessedMask) == 0 && _softwareAccessed;
    }

    /// <summary>A pre-fault's read fault through the fault handler, as a prefetch.</summary>
    private TdpAccessOutcome PrefetchAccess(ulong gpa)
    {
        _prefetching = true;
        try
        {
            return Access(gpa, AccessType.Read);
        }
        finally
        {
            _prefetching = false;
        }
    }

    /// <summary>How a present leaf reads back: accessed (always, for EPT without A/D), dirty.</summary>
    private bool LeafAccessed(ulong leaf) =>
        _accessedDirty != TdpAccessedDirty.Untracked && (_accessedMask == 0 || (leaf & _accessedMask) != 0);

    private bool LeafDirty(ulong leaf) => (leaf & _dirtyMask) != 0;

    public TdpStatus Age(ulong startGfn, ulong endGfn, out bool young) => Aging(startGfn, endGfn, clear: true, out young);

    public TdpStatus TestAge(ulong startGfn, ulong endGfn, out bool young) => Aging(startGfn, endGfn, clear: false, out young);

    private TdpStatus Aging(ulong start, ulong end, bool clear, out bool young)
    {
        ThrowIfDisposed();
        young = false;
        ForgetCachedTables(); // as a zap does
        if (_accessedDirty == TdpAccessedDirty.Untracked)
            return Reject("this MMU does not track accessed state");
        if (start >= end || end > _gfnLimit)
            return Reject($"age range [0x{start:X}, 0x{end:X}) is empty or beyond 2^{_gpaBits - PageShift} frames");
        if (!ClipToSlotSpace(ref start, ref end))
            return TdpStatus.Ok;
        young |= AgeLeafs(_directRoot, start + _sharedGfnMask, end + _sharedGfnMask, clear);
        young |= AgeLeafs(_mirrorRoot, start, end, clear);
        return TdpStatus.Ok;
    }

    /// <summary>
    /// One root: whether a leaf overlapping the frames is young, and with <paramref name="clear"/> makes each
    /// old: A cleared without a flush (KVM does not flush on aging), or without EPT A/D zapped and flushed.
    /// </summary>
    private bool AgeLeafs(TableRef root, ulong startFrame, ulong endFrame, bool clear)
    {
        AssertRoot(root);
        bool young = false;
        foreach (PteRef pte in new PteIterator<TFormat>(root, _rootLevel, startFrame, endFrame))
        {
            ulong value = pte.Value;
            if (!RadixTable<TFormat>.IsLeafEntry(value, pte.Level) || !LeafAccessed(value))
                continue;
            young = true;
            if (!clear)
                return true;
            if (_accessedMask != 0)
            {
                pte.Write(value & ~_accessedMask);
                continue;
            }
            pte.Clear();
            _flushes.Add(pte.Frame & ~_sharedGfnMask, FramesPerEntry(pte.Level));
        }
        return young;
    }
}
