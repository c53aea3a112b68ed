using System.Numerics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// A slot's dirty bitmap: slot-relative frame offsets written since the last fetch. Sparse, in chunks of
/// 4096 bits allocated on first use, because a slot may span up to 2^40 frames while a guest dirties
/// few of them. Fetching clears the chunks in place, so a workload that keeps dirtying the same memory
/// allocates nothing after its first round.
/// </summary>
internal sealed class DirtyBitmap
{
    private const int ChunkShift = 12;
    private const int WordsPerChunk = (1 << ChunkShift) / 64;
    private const ulong OffsetInChunkMask = (1UL << ChunkShift) - 1;

    private readonly Dictionary<ulong, ulong[]> _chunks = new();

    // Last chunk marked: a guest writes in bursts, so this skips the dictionary nearly always.
    private ulong _lastKey = ulong.MaxValue;
    private ulong[]? _lastChunk;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Mark(ulong offset)
    {
        ulong key = offset >> ChunkShift;
        ulong[]? chunk = _lastChunk;
        if (key != _lastKey || chunk is null)
            chunk = FindOrAddChunk(key);
        int bit = (int)(offset & OffsetInChunkMask);
        chunk[bit >> 6] |= 1UL << bit;
    }

    /// <summary>Appends <paramref name="bias"/> + every marked offset, ascending.</summary>
    public void CopySorted(List<ulong> into, ulong bias)
    {
        ulong[] keys = [.. _chunks.Keys];
        Array.Sort(keys);
        foreach (ulong key in keys)
        {
            ulong[] chunk = _chunks[key];
            ulong chunkBase = key << ChunkShift;
            for (int w = 0; w < WordsPerChunk; w++)
            {
                ulong word = chunk[w];
                while (word != 0)
                {
                    int bit = BitOperations.TrailingZeroCount(word);
                    into.Add(bias + chunkBase + (ulong)(w * 64 + bit));
                    word &= word - 1;
                }
            }
        }
    }

    /// <summary>Unmarks everything, keeping the chunks for the next round.</summary>
    public void Clear()
    {
        foreach (ulong[] chunk in _chunks.Values)
            Array.Clear(chunk);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong[] FindOrAddChunk(ulong key)
    {
        if (!_chunks.TryGetValue(key, out ulong[]? chunk))
        {
            chunk = new ulong[WordsPerChunk];
            _chunks.Add(key, chunk);
        }
        _lastKey = key;
        _lastChunk = chunk;
        return chunk;
    }
}
