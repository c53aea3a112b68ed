using System.Runtime.CompilerServices;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// A VM's memslots, for both MMUs: by id, in creation order, and the slot of the previous lookup
/// (KVM's last_used_slot: faults come in runs within one slot); the checks every MMU makes before it
/// creates or moves a slot, and the dirty log (fetch-and-clear of a slot's bitmap).
/// <para>
/// A mutable struct, kept as a field of the MMU (never copied, never readonly) so a fault reads the
/// cached slot at a fixed offset of the MMU, as it read its own field before.
/// </para>
/// </summary>
internal struct HostMemslotTable
{
    public const int MaxSlots = 32;

    private readonly HostMemslot?[] _byId;

    // The slots in use, scanned when the last-slot cache misses (copied on change).
    private HostMemslot[] _all;

    // Starts at (and returns to) a slot that contains no gfn, so the cache needs no null check.
    private HostMemslot _last;

    // Host frames written since the last TakeWrittenHostFrames, shared by every slot's host memory; null until TrackHostWrites.
    private HashSet<ulong>? _hostWrites;

    public HostMemslotTable()
    {
        _byId = new HostMemslot?[MaxSlots];
        _all = [];
        _last = HostMemslot.None;
    }

    /// <summary>The slots in creation order.</summary>
    public readonly HostMemslot[] All => _all;

    /// <summary>The slot of the previous lookup, or one that contains no gfn: never null.</summary>
    public readonly HostMemslot Last => _last;

    /// <summary>Slot <paramref name="id"/>, or null (also for an id outside 0..MaxSlots-1).</summary>
    public readonly HostMemslot? this[int id] => (uint)id < MaxSlots ? _byId[id] : null;

    /// <summary>The slot holding <paramref name="gfn"/>, or null; remembers it for the next lookup.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public HostMemslot? Find(ulong gfn)
    {
        HostMemslot last = _last;
        return last.Contains(gfn) ? last : FindSlow(gfn);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private HostMemslot? FindSlow(ulong gfn)
    {
        foreach (HostMemslot slot in _all)
        {
            if (slot.Contains(gfn))
            {
                _last = slot;
                return slot;
            }
        }
        return null;
    }

    /// <summary>The slot whose host frames include <paramref name="hostPfn"/>, or null.</summary>
    public readonly HostMemslot? HoldingHostFrame(ulong hostPfn)
    {
        foreach (HostMemslot slot in _all)
        {
            if (slot.HoldsHostFrame(hostPfn))
                return slot;
        }
        return null;
    }

    /// <summary>Why a slot <paramref name="id"/> of <paramref name="pages"/> pages cannot be created, whatever its ranges; or null.</summary>
    public readonly string? CreateProblem(int id, ulong pages)
    {
        if ((uint)id >= MaxSlots)
            return $"slot id {id} is outside 0..{MaxSlots - 1}";
        if (_byId[id] is not null)
            return $"slot {id} already exists";
        if (pages == 0)
            return "a slot needs at least one page";
        return null;
    }

    /// <summary>Why gfns [baseGfn, baseGfn + pages) overlap a slot other than <paramref name="self"/>, or null.</summary>
    public readonly string? OverlapProblem(ulong baseGfn, ulong pages, HostMemslot? self)
    {
        ulong end = baseGfn + pages;
        foreach (HostMemslot other in _all)
        {
            if (other != self && baseGfn < other.EndGfn && other.BaseGfn < end)
                return $"range [0x{baseGfn:X}, 0x{end:X}) overlaps slot {other.Id}";
        }
        return null;
    }

    /// <summary>Why host frames [hostPfnBase, hostPfnBase + pages) cannot back a new slot: each frame's contents belong to one slot.</summary>
    public readonly string? HostOverlapProblem(ulong hostPfnBase, ulong pages)
    {
        foreach (HostMemslot other in _all)
        {
            if (other.OverlapsHostFrames(hostPfnBase, pages))
                return $"host frames [0x{hostPfnBase:X}, 0x{hostPfnBase + pages:X}) overlap slot {other.Id}'s";
        }
        return null;
    }

    public void Add(HostMemslot slot)
    {
        if (_hostWrites is not null)
            slot.Host.LogWritesTo(_hostWrites, slot.HostPfnBase);
        _byId[slot.Id] = slot;
        _all = [.. _all, slot];
    }

    /// <summary>Forgets the slot; its host memory is the caller's to free.</summary>
    public void Remove(HostMemslot slot)
    {
        _byId[slot.Id] = null;
        _all = Array.FindAll(_all, s => s != slot);
        if (_last == slot)
            _last = HostMemslot.None;
    }

    /// <summary>Frees every slot's host memory and forgets every slot.</summary>
    public void FreeAll()
    {
        foreach (HostMemslot slot in _all)
            slot.Host.Free();
        _all = [];
        Array.Clear(_byId);
        _last = HostMemslot.None;
    }

    /// <summary>
    /// KVM_GET_DIRTY_LOG's fetch and clear: appends slot <paramref name="id"/>'s dirty gfns (absolute,
    /// ascending) to <paramref name="gfns"/> and clears its bitmap. Returns why it cannot, or null;
    /// write-protecting what was fetched is the MMU's.
    /// </summary>
    public readonly string? TakeDirtyLog(int id, List<ulong> gfns, out HostMemslot? slot)
    {
        slot = this[id];
        if (slot is null)
            return $"no slot {id}";
        if (slot.Dirty is not DirtyBitmap dirty)
            return $"slot {id} does not log dirty pages";
        dirty.CopySorted(gfns, slot.BaseGfn);
        dirty.Clear();
        return null;
    }

    // ---- the abstract state, for tests and tools (allocates) ----

    /// <summary>The slots by id.</summary>
    public readonly IReadOnlyList<HostMemslotInfo> Infos()
    {
        var infos = new List<HostMemslotInfo>();
        foreach (HostMemslot? slot in _byId)
        {
            if (slot is not null)
                infos.Add(slot.Info);
        }
        return infos;
    }

    /// <summary>Slot <paramref name="id"/>'s dirty offsets (slot-relative, ascending); empty for an unknown or non-logging slot.</summary>
    public readonly List<ulong> DirtyOffsets(int id)
    {
        var offsets = new List<ulong>();
        this[id]?.Dirty?.CopySorted(offsets, bias: 0);
        return offsets;
    }

    /// <summary>From now on, log the host frame of every store to a slot's host memory, and of every written page of a slot freed.</summary>
    public void TrackHostWrites()
    {
        if (_hostWrites is not null)
            return;
        _hostWrites = new HashSet<ulong>();
        foreach (HostMemslot slot in _all)
            slot.Host.LogWritesTo(_hostWrites, slot.HostPfnBase);
    }

    /// <summary>Moves the logged host frames into <paramref name="hostPfns"/>; false (nothing moved) when writes are not tracked.</summary>
    public readonly bool TakeWrittenHostFrames(ICollection<ulong> hostPfns)
    {
        if (_hostWrites is null)
            return false;
        foreach (ulong pfn in _hostWrites)
            hostPfns.Add(pfn);
        _hostWrites.Clear();
        return true;
    }

    /// <summary>
    /// Host frame <paramref name="hostPfn"/>'s words as <see cref="VisitHostMemory"/> reports them; all zero (and false)
    /// when no slot holds it. The argument checks of every MMU's <c>ReadHostFrame</c> live here.
    /// </summary>
    public readonly bool ReadHostFrame(ulong hostPfn, ulong[] words)
    {
        ArgumentNullException.ThrowIfNull(words);
        if (words.Length != TableBytes / sizeof(ulong))
            ThrowHelper.Argument(nameof(words), "A host frame is 512 words.");
        if (HoldingHostFrame(hostPfn) is not HostMemslot slot)
        {
            Array.Clear(words);
            return false;
        }
        slot.Host.CopyPage(hostPfn - slot.HostPfnBase, words);
        return true;
    }

    /// <summary>Every non-zero 8-byte word of every slot's host memory: slots by id, words ascending.</summary>
    public readonly void VisitHostMemory(Action<ulong, ulong> visit)
    {
        foreach (HostMemslot? slot in _byId)
            slot?.Host.Visit(slot.HostPfnBase << PageShift, visit);
    }
}
