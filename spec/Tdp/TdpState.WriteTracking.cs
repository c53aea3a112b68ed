using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>
/// Write tracking (arch/x86/kvm/mmu/page_track.c, kvm_write_track_add_gfn / kvm_write_track_remove_gfn): the
/// host asks to see every guest write to a gfn, as KVM does for a guest page table it shadows. While a gfn is
/// tracked no leaf maps it writable: tracking write-protects the leaves that map it (any size,
/// kvm_mmu_slot_gfn_write_protect), a write to it exits to be emulated (page_fault_handle_page_track,
/// RET_PF_EMULATE), a new leaf for it is read-only, and no huge leaf is made over it (the gfn's disallow_lpage
/// count, kvm_mmu_max_mapping_level). A write to another gfn under a read-only huge leaf over a tracked gfn
/// drops that leaf and maps a smaller one. Tracking is by gfn, independent of the slots' later changes
/// (the model keeps it across them; KVM's slot-based tracking is freed with a deleted slot).
/// </summary>
public sealed partial record TdpState
{
    /// <summary>The gfns whose writes are tracked (shared bit removed).</summary>
    public ImmutableSortedSet<ulong> WriteTracked { get; init; } = ImmutableSortedSet<ulong>.Empty;

    /// <summary>Tracking needs the gfn in a slot (KVM's tracking lives in the slot's arrays); tracking a tracked gfn changes nothing.</summary>
    TdpStepped TrackWrites(ulong gfn)
    {
        if (!Slots.Values.Any(s => s.Contains(gfn))) return Reject($"gfn {Bits.Hex(gfn)} is in no slot");
        if (WriteTracked.Contains(gfn)) return Done(this);
        return Done(WriteProtect(gfn, gfn + 1) with { WriteTracked = WriteTracked.Add(gfn) });
    }

    /// <summary>Untracking leaves the leaves read-only: the next write fault makes one writable.</summary>
    TdpStepped UntrackWrites(ulong gfn) =>
        WriteTracked.Contains(gfn)
            ? Done(this with { WriteTracked = WriteTracked.Remove(gfn) })
            : Reject($"gfn {Bits.Hex(gfn)} is not tracked");

    /// <summary>Whether a leaf at <paramref name="level"/> from <paramref name="gfn"/> (aligned) would map a tracked gfn.</summary>
    bool TracksWithin(ulong gfn, int level)
    {
        ulong frames = 1UL << (9 * (level - 1));
        ulong start = gfn & ~(frames - 1);
        return WriteTracked.Any(t => t - start < frames);
    }
}
