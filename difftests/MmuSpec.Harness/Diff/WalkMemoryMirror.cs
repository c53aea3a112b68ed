using System.Buffers;
using System.Collections.Immutable;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The spec's guest memory as dense words laid out like the impl's memslots, kept in step with the
/// spec so a step can be compared on the pages whose spec words changed since the last comparison
/// instead of on all of memory (the walk family's state check read every slot after every step).
/// A stray impl write to a page the spec did not change is not seen here: an incremental run compares all
/// of memory at its last step, and <see cref="Running.Lockstep.Run"/> reruns a divergent case with
/// full comparisons, so the step and the lines reported are the full comparison's.
/// </summary>
public sealed class WalkMemoryMirror : IDisposable
{
    const int WordsPerPage = 4096 / 8;

    readonly ImplWalkEngine impl;
    readonly ulong[][] words;
    readonly List<ulong> touchedGfns = [];
    // The spec memory the mirror holds; null when it holds none (not set yet, or a word outside the impl's slots).
    ImmutableSortedDictionary<ulong, ulong>? mirrored;

    public WalkMemoryMirror(ImplWalkEngine impl)
    {
        this.impl = impl;
        // Rented: a case's 320 KiB would otherwise be a large-object allocation per case.
        words = new ulong[impl.Slots.Count][];
        for (int i = 0; i < words.Length; i++) words[i] = ArrayPool<ulong>.Shared.Rent(impl.SlotWords(i).Length);
    }

    /// <summary>Holds <paramref name="spec"/> from now on: the caller has just found it equal to the impl's memory in full.</summary>
    public void Agree(ImmutableSortedDictionary<ulong, ulong> spec)
    {
        if (ReferenceEquals(spec, mirrored)) return;
        mirrored = null;
        for (int i = 0; i < words.Length; i++) Array.Clear(words[i], 0, impl.SlotWords(i).Length);
        foreach (var (gpa, value) in spec)
            if (!TrySet(gpa, value)) return;
        mirrored = spec;
    }

    /// <summary>
    /// Whether every page where <paramref name="spec"/> differs from the memory last held has the same
    /// words in the impl's memory; false too when it cannot tell (nothing held, a word outside the slots).
    /// </summary>
    public bool ChangedPagesEqual(ImmutableSortedDictionary<ulong, ulong> spec)
    {
        if (mirrored is null) return false;
        if (ReferenceEquals(spec, mirrored)) return true;
        touchedGfns.Clear();
        var before = mirrored;
        mirrored = null;
        foreach (var (gpa, was, now) in SortedMerge.Outer(before, spec))
        {
            if (was == now) continue;
            if (!TrySet(gpa, now)) return false;
            ulong gfn = gpa >> 12;
            if (touchedGfns.Count == 0 || touchedGfns[^1] != gfn) touchedGfns.Add(gfn);
        }
        mirrored = spec;
        foreach (ulong gfn in touchedGfns)
        {
            int slot = SlotOf(gfn << 12);
            int at = (int)((gfn - impl.Slots[slot].BaseGfn) * WordsPerPage);
            if (!impl.SlotWords(slot).Slice(at, WordsPerPage).SequenceEqual(words[slot].AsSpan(at, WordsPerPage))) return false;
        }
        return true;
    }

    bool TrySet(ulong gpa, ulong value)
    {
        int slot = SlotOf(gpa);
        if (slot < 0) return false;
        words[slot][(gpa - (impl.Slots[slot].BaseGfn << 12)) / 8] = value;
        return true;
    }

    int SlotOf(ulong gpa)
    {
        ulong gfn = gpa >> 12;
        for (int i = 0; i < words.Length; i++)
            if (gfn >= impl.Slots[i].BaseGfn && gfn - impl.Slots[i].BaseGfn < impl.Slots[i].Pages) return i;
        return -1;
    }

    public void Dispose()
    {
        for (int i = 0; i < words.Length; i++)
            if (words[i] is { } w) { ArrayPool<ulong>.Shared.Return(w); words[i] = null!; }
    }
}
