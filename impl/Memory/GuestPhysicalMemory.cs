using System.Collections.ObjectModel;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// Guest physical address space as a handful of memslots (KVM's kvm_memory_slot / gfn_to_hva):
/// each slot maps a run of guest frames onto host memory. Addresses outside every slot are unbacked.
/// Lookups may run concurrently with each other; adding slots or disposing must not race with them.
/// One of the two owners of raw pointers (with <see cref="NativePagePool"/>): host addresses leave it only
/// through internal members, and the public surface reads, writes and adds slots by gpa.
/// </summary>
public sealed unsafe class GuestPhysicalMemory : IDisposable
{
    private const int PageShift = 12;
    private const ulong PageSize = 1UL << PageShift;

    /// <summary>Frame numbers are below 2^52: GPA 2^64 / 4 KiB.</summary>
    private const ulong GfnLimit = 1UL << (64 - PageShift);

    /// <summary>Alignment demanded of external host memory: entries are read as aligned 8-byte words.</summary>
    private const nuint ExternalHostAlignment = sizeof(ulong);

    private readonly NativePagePool _pool;
    private readonly List<MemslotInfo> _infos = new();
    private readonly ReadOnlyCollection<MemslotInfo> _infosView;

    // Copy-on-add array so a lookup never sees a half-built list.
    private Slot[] _slots = [];

    // Last slot hit (KVM keeps a similar last_used_slot): a whole walk usually stays in one slot,
    // so this turns the slot search into one subtract and one compare. One reference, so it never tears.
    private Slot _lastHit = Slot.Empty;

    private bool _disposed;

    // Frames written since the last TakeWrittenFrames, or null when nobody asked (the walk then pays one
    // null test on its A/D write-back only): the differential harness compares just these and the spec's.
    private HashSet<ulong>? _writtenFrames;

    public GuestPhysicalMemory(NativePagePool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        _pool = pool;
        _infosView = _infos.AsReadOnly();
    }

    /// <summary>The slots in the order they were added; the index matches <see cref="SlotBytes"/>.</summary>
    public IReadOnlyList<MemslotInfo> Slots => _infosView;

    /// <summary>Adds a slot backed by fresh zeroed pages from the pool (freed by <see cref="Dispose"/>).</summary>
    public void AddSlot(ulong baseGfn, ulong pages)
    {
        ValidateRange(baseGfn, pages);
        if (pages > int.MaxValue)
            ThrowHelper.ArgumentOutOfRange(nameof(pages), "Pool-backed slots are limited to int.MaxValue pages.");
        byte* host = _pool.AllocatePages((int)pages);
        Insert(new Slot(baseGfn, pages, host, ownedByPool: true));
    }

    /// <summary>
    /// Adds a slot over <paramref name="pages"/> pages of <paramref name="buffer"/> from byte
    /// <paramref name="byteOffset"/> (e.g. a memory-mapped image's view). The buffer is held (its pointer
    /// acquired) until the slot is removed or this object disposed; it is never freed here.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The pages do not fit in the buffer from that offset,
    /// or the range is not a valid slot.</exception>
    /// <exception cref="ArgumentException">The offset is not 8-byte aligned, or the range overlaps a slot.</exception>
    public void AddExternalSlot(ulong baseGfn, ulong pages, SafeBuffer buffer, ulong byteOffset)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        ValidateRange(baseGfn, pages);
        if (byteOffset > buffer.ByteLength || pages > (buffer.ByteLength - byteOffset) / PageSize)
            ThrowHelper.ArgumentOutOfRange(nameof(pages), "The slot's pages do not fit in the buffer from that offset.");
        if ((byteOffset & (ExternalHostAlignment - 1)) != 0)
            ThrowHelper.Argument(nameof(byteOffset), "External host memory must be 8-byte aligned.");
        byte* start = null;
        buffer.AcquirePointer(ref start); // released by RemoveSlot or Dispose
        Debug.Assert(((nuint)start & (ExternalHostAlignment - 1)) == 0, "a buffer's base is 8-byte aligned");
        Insert(new Slot(baseGfn, pages, start + byteOffset, ownedByPool: false, buffer));
    }

    /// <summary>A memslot's host memory (the TDP and shadow MMUs'), at <paramref name="baseGfn"/>; not freed here.</summary>
    internal void AddExternalSlot(ulong baseGfn, ulong pages, HostMemory host)
    {
        Debug.Assert(pages << PageShift <= host.Bytes, "a window larger than its host memory");
        AddExternalSlot(baseGfn, pages, host.Base);
    }

    /// <summary>
    /// Adds a slot over host memory this object does not own. The memory must stay valid for this
    /// object's lifetime and is not freed by <see cref="Dispose"/>.
    /// </summary>
    internal void AddExternalSlot(ulong baseGfn, ulong pages, byte* host)
    {
        if (host == null)
            ThrowHelper.ArgumentNull(nameof(host));
        Debug.Assert(((nuint)host & (ExternalHostAlignment - 1)) == 0, "external host memory must be 8-byte aligned");
        ValidateRange(baseGfn, pages);
        Insert(new Slot(baseGfn, pages, host, ownedByPool: false));
    }

    /// <summary>
    /// Removes the slot that starts at <paramref name="baseGfn"/>, returning its pages to the pool when it
    /// owns them (external memory is left alone). Afterwards its addresses are unbacked, and the range may
    /// be added again (e.g. a moved memslot: remove, then <see cref="AddExternalSlot"/> at the new base).
    /// Must not race with lookups.
    /// </summary>
    /// <exception cref="ArgumentException">No slot starts at <paramref name="baseGfn"/>.</exception>
    public void RemoveSlot(ulong baseGfn)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Slot[] slots = _slots;
        int index = -1;
        for (int i = 0; i < slots.Length; i++)
        {
            if (slots[i].BaseGpa >> PageShift == baseGfn)
            {
                index = i;
                break;
            }
        }
        if (index < 0)
            ThrowHelper.Argument(nameof(baseGfn), "No slot starts at this frame.");

        Slot removed = slots[index];
        Slot[] shrunk = new Slot[slots.Length - 1];
        Array.Copy(slots, 0, shrunk, 0, index);
        Array.Copy(slots, index + 1, shrunk, index, slots.Length - index - 1);
        _slots = shrunk;
        _infos.RemoveAt(index);
        if (_lastHit == removed)
            _lastHit = Slot.Empty;
        removed.Release(_pool);
    }

    /// <summary>
    /// From now on, remember the frame of every write through this object: <see cref="TryWrite64"/>,
    /// <see cref="TryWrite32"/> and the walk's accessed/dirty updates (<see cref="NoteEntryWrite"/>).
    /// </summary>
    public void TrackWrites() => _writtenFrames ??= new HashSet<ulong>();

    /// <summary>Moves the frames written since the last call (or <see cref="TrackWrites"/>) into <paramref name="gfns"/>.</summary>
    public void TakeWrittenFrames(ICollection<ulong> gfns)
    {
        if (_writtenFrames is null)
            ThrowHelper.InvalidOperation("Writes are not tracked: call TrackWrites first.");
        foreach (ulong gfn in _writtenFrames)
            gfns.Add(gfn);
        _writtenFrames.Clear();
    }

    /// <summary>The walk is about to update <paramref name="entry"/> in place (an A or D bit): remembered when tracking.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void NoteEntryWrite(Paging.PagingEntry entry)
    {
        if (_writtenFrames is not null)
            NoteHostWrite(entry.Host);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NoteHostWrite(byte* host)
    {
        foreach (Slot s in _slots)
        {
            ulong offset = (ulong)(host - s.Host);
            if (host >= s.Host && offset < s.Bytes)
            {
                _writtenFrames!.Add((s.BaseGpa + offset) >> PageShift);
                return;
            }
        }
        Debug.Fail("an entry outside every slot was written");
    }

    /// <summary>Host address backing <paramref name="gpa"/>, or null when no slot covers it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* HostAddress(ulong gpa)
    {
        Slot last = _lastHit;
        // Unsigned wrap turns "below base" into a huge offset: one compare checks both bounds.
        ulong offset = gpa - last.BaseGpa;
        if (offset < last.Bytes)
            return last.Host + offset;
        return HostAddressSlow(gpa);
    }

    /// <summary>The paging entry at <paramref name="gpa"/> for the walk (unbacked when no slot covers it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Paging.PagingEntry Entry(ulong gpa) => new(HostAddress(gpa));

    public bool TryRead64(ulong gpa, out ulong value)
    {
        Debug.Assert((gpa & (sizeof(ulong) - 1)) == 0, "unaligned 64-bit guest read");
        byte* p = HostAddress(gpa);
        if (p == null)
        {
            value = 0;
            return false;
        }
        value = *(ulong*)p;
        return true;
    }

    public bool TryRead32(ulong gpa, out uint value)
    {
        Debug.Assert((gpa & (sizeof(uint) - 1)) == 0, "unaligned 32-bit guest read");
        byte* p = HostAddress(gpa);
        if (p == null)
        {
            value = 0;
            return false;
        }
        value = *(uint*)p;
        return true;
    }

    /// <summary>A <paramref name="bytes"/>-wide (4 or 8) read: a paging entry of either width.</summary>
    public bool TryRead(ulong gpa, int bytes, out ulong value)
    {
        Debug.Assert(bytes is sizeof(uint) or sizeof(ulong), "an entry is 4 or 8 bytes");
        if (bytes == sizeof(ulong))
            return TryRead64(gpa, out value);
        bool backed = TryRead32(gpa, out uint narrow);
        value = narrow;
        return backed;
    }

    public bool TryWrite64(ulong gpa, ulong value)
    {
        Debug.Assert((gpa & (sizeof(ulong) - 1)) == 0, "unaligned 64-bit guest write");
        byte* p = HostAddress(gpa);
        if (p == null)
            return false;
        _writtenFrames?.Add(gpa >> PageShift);
        *(ulong*)p = value;
        return true;
    }

    public bool TryWrite32(ulong gpa, uint value)
    {
        Debug.Assert((gpa & (sizeof(uint) - 1)) == 0, "unaligned 32-bit guest write");
        byte* p = HostAddress(gpa);
        if (p == null)
            return false;
        _writtenFrames?.Add(gpa >> PageShift);
        *(uint*)p = value;
        return true;
    }

    /// <summary>Every byte of slot <paramref name="index"/> (index into <see cref="Slots"/>).</summary>
    public ReadOnlySpan<byte> SlotBytes(int index)
    {
        Slot[] slots = _slots;
        if ((uint)index >= (uint)slots.Length)
            ThrowHelper.ArgumentOutOfRange(nameof(index), "No such slot.");
        Slot s = slots[index];
        if (s.Bytes > int.MaxValue)
            ThrowHelper.InvalidOperation("Slot is too large to expose as a single span.");
        return new ReadOnlySpan<byte>(s.Host, (int)s.Bytes);
    }

    /// <summary>Returns pool-owned slots to the pool; afterwards every address is unbacked.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Slot[] slots = _slots;
        _slots = [];
        _lastHit = Slot.Empty;
        _infos.Clear();
        foreach (Slot s in slots)
            s.Release(_pool);
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // keeps HostAddress's inlined fast path tiny
    private byte* HostAddressSlow(ulong gpa)
    {
        foreach (Slot s in _slots)
        {
            ulong offset = gpa - s.BaseGpa;
            if (offset < s.Bytes)
            {
                _lastHit = s;
                return s.Host + offset;
            }
        }
        return null;
    }

    private void ValidateRange(ulong baseGfn, ulong pages)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (pages == 0)
            ThrowHelper.ArgumentOutOfRange(nameof(pages), "A slot needs at least one page.");
        // pages < GfnLimit also keeps the slot's byte length representable in a ulong.
        if (baseGfn >= GfnLimit || pages >= GfnLimit || pages > GfnLimit - baseGfn)
            ThrowHelper.ArgumentOutOfRange(nameof(pages), "Slot extends past the 64-bit guest physical address space.");
        ulong end = baseGfn + pages;
        foreach (MemslotInfo existing in _infos)
        {
            if (baseGfn < existing.BaseGfn + existing.Pages && existing.BaseGfn < end)
                ThrowHelper.Argument(nameof(baseGfn), "Slot overlaps an existing slot.");
        }
    }

    private void Insert(Slot slot)
    {
        Slot[] grown = new Slot[_slots.Length + 1];
        _slots.CopyTo(grown, 0);
        grown[^1] = slot;
        _slots = grown;
        _infos.Add(new MemslotInfo(slot.BaseGpa >> PageShift, slot.Bytes >> PageShift));
    }

    /// <summary>Immutable slot record; a class so the last-hit cache is a single atomic reference.</summary>
    private sealed class Slot
    {
        public static readonly Slot Empty = new();

        public readonly ulong BaseGpa;
        public readonly ulong Bytes;
        public readonly byte* Host;
        public readonly bool OwnedByPool;

        // A caller's buffer whose pointer the slot holds, released with the slot.
        private readonly SafeBuffer? _buffer;

        private Slot() { }

        public Slot(ulong baseGfn, ulong pages, byte* host, bool ownedByPool, SafeBuffer? buffer = null)
        {
            BaseGpa = baseGfn << PageShift;
            Bytes = pages * PageSize;
            Host = host;
            OwnedByPool = ownedByPool;
            _buffer = buffer;
        }

        /// <summary>Gives the slot's memory back: to the pool when it owns it, the buffer's pointer when it holds one.</summary>
        public void Release(NativePagePool pool)
        {
            if (OwnedByPool)
                pool.FreePages(Host, (int)(Bytes >> PageShift));
            _buffer?.ReleasePointer();
        }
    }
}
