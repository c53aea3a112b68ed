using System.Runtime.CompilerServices;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// A vCPU's simulated hardware TLB for the second dimension (docs/tdp-concurrency.md, "Per-vCPU TLBs"): a few
/// direct-mapped entries per page size, each a whole leaf (its first frame, shared bit included, its host frame, level and
/// write right), filled when an access translates and consulted before the next one walks. It holds what the
/// tables held when it was filled until a flush covering it is served, as hardware may: the MMU owes the
/// flushes (docs/tdp-model.md, "TLB flushes"). Private to its vCPU's thread; inline in the vCPU, no allocation.
/// </summary>
internal struct VcpuTlb
{
    /// <summary>4 KiB entries, indexed by the frame's low bits, and huge (2 MiB, 1 GiB) ones, by the 2 MiB frame's (powers of two).</summary>
    public const int SmallEntries = 8, HugeEntries = 4;

    private SmallBuffer _small;
    private HugeBuffer _huge;

    /// <summary>The cached translation of <paramref name="frame"/>, when one allows the access (a huge entry first, as a CPU looks in every size's TLB).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool TryHit(ulong frame, bool write, out ulong hostPfn, out int level)
    {
        Entry e = _huge[(int)((frame >> IndexBits) & (HugeEntries - 1))];
        if (!Serves(e, frame, write))
            e = _small[(int)(frame & (SmallEntries - 1))];
        level = e.Level;
        hostPfn = e.HostPfn + (frame - e.Frame);
        return Serves(e, frame, write);
    }

    // Level 0 is an empty entry; a read-only entry does not serve a write (the CPU faults and the MMU looks).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Serves(Entry e, ulong frame, bool write) =>
        e.Level != 0 && frame - e.Frame < FramesPerEntry(e.Level) && (e.Writable || !write);

    /// <summary>Caches the leaf at <paramref name="level"/> that maps <paramref name="frame"/> to <paramref name="hostPfn"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Fill(ulong frame, ulong hostPfn, int level, bool writable)
    {
        ulong first = AlignDown(frame, level);
        var entry = new Entry(first, hostPfn - (frame - first), (byte)level, writable);
        if (level == 1)
            _small[(int)(frame & (SmallEntries - 1))] = entry;
        else
            _huge[(int)((frame >> IndexBits) & (HugeEntries - 1))] = entry;
    }

    /// <summary>Drops every entry for a gfn in [startGfn, endGfn) (shared bit stripped: both roots' entries go).</summary>
    public void Flush(ulong startGfn, ulong endGfn, ulong sharedGfnMask)
    {
        for (int i = 0; i < SmallEntries; i++)
            Drop(ref _small[i], startGfn, endGfn, sharedGfnMask);
        for (int i = 0; i < HugeEntries; i++)
            Drop(ref _huge[i], startGfn, endGfn, sharedGfnMask);
    }

    private static void Drop(ref Entry e, ulong startGfn, ulong endGfn, ulong sharedGfnMask)
    {
        ulong gfn = e.Frame & ~sharedGfnMask;
        if (e.Level != 0 && gfn < endGfn && startGfn < gfn + FramesPerEntry(e.Level))
            e = default;
    }

    public void FlushAll()
    {
        _small = default;
        _huge = default;
    }

    /// <summary>Entries held (for tests and counters).</summary>
    public readonly int Count
    {
        get
        {
            int n = 0;
            for (int i = 0; i < SmallEntries; i++)
                n += _small[i].Level != 0 ? 1 : 0;
            for (int i = 0; i < HugeEntries; i++)
                n += _huge[i].Level != 0 ? 1 : 0;
            return n;
        }
    }

    private readonly record struct Entry(ulong Frame, ulong HostPfn, byte Level, bool Writable);

    [InlineArray(SmallEntries)]
    private struct SmallBuffer
    {
        private Entry _element0;
    }

    [InlineArray(HugeEntries)]
    private struct HugeBuffer
    {
        private Entry _element0;
    }
}
