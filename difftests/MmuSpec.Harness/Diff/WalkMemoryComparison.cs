using System.Collections.Immutable;
using MmuSpec.Spec.GuestWalk;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The walk family's per-step state comparison. Comparing every word of guest memory after every step
/// was most of a walk step's cost; this compares only the pages that changed on either side since
/// both were last found to hold the same memory: the words the spec changed (a merge of its last and
/// current maps) and every frame the impl wrote (guest memory's write log: its stores and the walk's
/// accessed/dirty updates). Changes on neither side leave a page as it was when the two agreed, so the
/// union is enough. The spec's memory is kept as dense words laid out like the impl's memslots. When the
/// changed pages differ, or the comparison cannot tell, or at the case's last step, all of memory is
/// compared as before, and that comparison's lines are the ones reported.
/// </summary>
public sealed class WalkMemoryComparison : IDisposable
{
    const int PageShift = 12;
    const int WordsPerPage = 4096 / 8;

    readonly ImplWalkEngine impl;
    readonly ulong[][] words;
    // The mirror's pages that may hold a non-zero word (slot, page), zeroed again before the arrays go back to Zeroed.
    readonly HashSet<(int Slot, int Page)> dirtyPages = [];
    readonly HashSet<ulong> frames = [];
    // The spec memory the mirror holds, equal to the impl's when it was set; null when it holds none.
    ImmutableSortedDictionary<ulong, ulong>? agreed;

    public WalkMemoryComparison(ImplWalkEngine impl)
    {
        this.impl = impl;
        impl.TrackWrites();
        // Reused, and zero: a case's few hundred KiB would otherwise be allocated (or cleared) per case.
        words = new ulong[impl.Slots.Count][];
        for (int i = 0; i < words.Length; i++) words[i] = TakeZeroed(impl.SlotWords(i).Length);
    }

    // Per thread (campaign jobs run on their own threads): arrays by length, all zero.
    [ThreadStatic] static Dictionary<int, Stack<ulong[]>>? zeroed;

    static ulong[] TakeZeroed(int length)
    {
        if (zeroed is null || !zeroed.TryGetValue(length, out var stack) || !stack.TryPop(out var array)) return new ulong[length];
        // A stale word could match a stray impl write on a page both changed: the reuse must be all zero.
        System.Diagnostics.Debug.Assert(array.AsSpan().IndexOfAnyExcept(0UL) < 0, "a reused mirror holds a stale word");
        return array;
    }

    void ReturnZeroed()
    {
        foreach (var (slot, page) in dirtyPages) Array.Clear(words[slot], page * WordsPerPage, WordsPerPage);
        dirtyPages.Clear();
        zeroed ??= [];
        foreach (var array in words)
        {
            if (!zeroed.TryGetValue(array.Length, out var stack)) zeroed[array.Length] = stack = new Stack<ulong[]>();
            if (stack.Count < 4) stack.Push(array);
        }
    }

    /// <summary>
    /// The differences between <paramref name="spec"/> and the impl, as <see cref="MachineView.Differences(CpuState, ImmutableSortedDictionary{ulong, ulong}, CpuState, IEnumerable{KeyValuePair{ulong, ulong}}, int)"/>
    /// names them; <paramref name="full"/> compares all of memory whatever changed.
    /// </summary>
    public ImmutableArray<string> Differences(GuestMachine spec, bool full = false)
    {
        var memory = spec.Memory.Written;
        if (!full && ChangedPagesEqual(memory))
            return MachineView.Differences(spec.Cpu, memory, impl.Cpu(), memory);
        // Memory equal in one pass (the common case) leaves the vCPU to compare; else the merge names the words.
        IEnumerable<KeyValuePair<ulong, ulong>> implMemory = impl.HoldsExactly(memory) ? memory : impl.Words();
        var lines = MachineView.Differences(spec.Cpu, memory, impl.Cpu(), implMemory);
        if (ReferenceEquals(implMemory, memory)) Agree(memory);
        else agreed = null;
        return lines;
    }

    /// <summary>Holds <paramref name="spec"/> from now on: the caller has just found it equal to the impl's memory in full.</summary>
    void Agree(ImmutableSortedDictionary<ulong, ulong> spec)
    {
        frames.Clear();
        impl.TakeWrittenFrames(frames);   // everything written so far was just compared
        if (ReferenceEquals(spec, agreed)) return;
        // The mirror still holds the last agreed memory: apply the words that changed. Else start from zero.
        var before = agreed;
        agreed = null;
        if (before is null)
        {
            foreach (var (slot, page) in dirtyPages) Array.Clear(words[slot], page * WordsPerPage, WordsPerPage);
            dirtyPages.Clear();
            before = ImmutableSortedDictionary.Create<ulong, ulong>(spec.KeyComparer);
        }
        foreach (var (gpa, was, now) in SortedMerge.Outer(before, spec))
            if (was != now && !TrySet(gpa, now)) return;
        agreed = spec;
    }

    /// <summary>
    /// Whether every page the spec or the impl changed since the memory last agreed holds the same words
    /// on both sides; false too when it cannot tell (nothing held, a spec word outside the impl's slots).
    /// </summary>
    bool ChangedPagesEqual(ImmutableSortedDictionary<ulong, ulong> spec)
    {
        frames.Clear();
        impl.TakeWrittenFrames(frames);
        if (agreed is null) return false;
        var before = agreed;
        agreed = null;   // until the pages are found equal: a false below leaves the full comparison to reset it
        if (!ReferenceEquals(spec, before))
        {
            foreach (var (gpa, was, now) in SortedMerge.Outer(before, spec))
            {
                if (was == now) continue;
                if (!TrySet(gpa, now)) return false;
                frames.Add(gpa >> PageShift);
            }
        }
        foreach (ulong gfn in frames)
        {
            int slot = SlotOf(gfn);
            if (slot < 0) return false;
            int at = (int)((gfn - impl.Slots[slot].BaseGfn) * WordsPerPage);
            if (!impl.SlotWords(slot).Slice(at, WordsPerPage).SequenceEqual(words[slot].AsSpan(at, WordsPerPage))) return false;
        }
        agreed = spec;
        return true;
    }

    bool TrySet(ulong gpa, ulong value)
    {
        int slot = SlotOf(gpa >> PageShift);
        if (slot < 0 || (gpa & 7) != 0) return false;
        ulong word = (gpa - (impl.Slots[slot].BaseGfn << PageShift)) / 8;
        words[slot][word] = value;
        dirtyPages.Add((slot, (int)(word / WordsPerPage)));
        return true;
    }

    int SlotOf(ulong gfn)
    {
        for (int i = 0; i < words.Length; i++)
            if (gfn >= impl.Slots[i].BaseGfn && gfn - impl.Slots[i].BaseGfn < impl.Slots[i].Pages) return i;
        return -1;
    }

    public void Dispose()
    {
        if (words.Length == 0 || words[0] is null) return;
        ReturnZeroed();
        Array.Fill(words, null!);
    }
}
