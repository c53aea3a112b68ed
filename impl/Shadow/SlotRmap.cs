using System.Diagnostics;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// A memslot's reverse-map heads (KVM's slot->arch.rmap for 4 KiB): one <see cref="PteListPool"/> head per
/// frame, indexed by the slot-relative offset, in a lazily zeroed native run (8 bytes per frame, 1/512 of
/// the slot's size, and only touched pages become resident). O(1) from gfn to its leaves with no hashing;
/// offsets are slot-relative, so a slot move keeps it (the move zaps every page anyway).
/// <see cref="NonEmpty"/> counts heads in use so range walks skip a slot with no leaves.
/// </summary>
internal sealed unsafe class SlotRmap
{
    private readonly NativePagePool _pool;
    private readonly long _runPages;
    private ulong* _heads;

    public SlotRmap(NativePagePool pool, ulong frames)
    {
        _pool = pool;
        Frames = frames;
        _runPages = (long)((frames + (NativePagePool.PageSize / sizeof(ulong) - 1)) / (NativePagePool.PageSize / sizeof(ulong)));
        _heads = (ulong*)pool.AllocateLazilyZeroedPages(_runPages);
    }

    public ulong Frames { get; }

    /// <summary>Heads that are not empty.</summary>
    public long NonEmpty { get; set; }

    public ref ulong Head(ulong offset)
    {
        Debug.Assert(_heads != null && offset < Frames, "rmap offset outside the slot");
        return ref _heads[offset];
    }

    public void Free()
    {
        if (_heads == null)
            return;
        _pool.FreeLazilyZeroedPages((byte*)_heads, _runPages);
        _heads = null;
    }
}
