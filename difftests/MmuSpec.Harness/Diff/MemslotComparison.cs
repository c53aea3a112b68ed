using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using ImplMemory = MmuSpec.Impl.Memory;

namespace MmuSpec.Harness.Diff;

/// <summary>The TDP and shadow state comparisons' memslot check, in place: no map built per step.</summary>
public static class MemslotComparison
{
    /// <summary>
    /// Whether the impl's slots and dirty logs, read as the full view reads them, equal <paramref name="spec"/>;
    /// false too when unsure (a slot id twice, offsets out of order), so that the caller falls back to the full view.
    /// </summary>
    public static bool Same(IReadOnlyList<ImplMemory.HostMemslotInfo> slots, Func<int, IEnumerable<ulong>> dirtyOffsets, HostMemslots spec)
    {
        if (slots.Count != spec.Slots.Count) return false;
        ulong ids = 0;
        int logging = 0;
        foreach (var s in slots)
        {
            if ((uint)s.Id >= 64 || (ids & (1UL << s.Id)) != 0) return false;
            ids |= 1UL << s.Id;
            if (!spec.Slots.TryGetValue(s.Id, out var t) || t.BaseGfn != s.BaseGfn || t.Pages != s.Pages || t.HostPfnBase != s.HostPfnBase
                || t.HostPageSize != PageSizes.FromShift(s.HostPageShift) || t.ReadOnly != s.ReadOnly || t.DirtyLogging != s.DirtyLogging)
                return false;
            if (!s.DirtyLogging) continue;
            logging++;
            if (!spec.DirtyBitmaps.TryGetValue(s.Id, out var bitmap) || !SameSet(dirtyOffsets(s.Id), bitmap)) return false;
        }
        return logging == spec.DirtyBitmaps.Count;
    }

    /// <summary><c>offsets.ToImmutableSortedSet().SetEquals(bitmap)</c> without building the set; false when not strictly ascending.</summary>
    static bool SameSet(IEnumerable<ulong> offsets, ImmutableSortedSet<ulong> bitmap)
    {
        int count = 0;
        ulong previous = 0;
        foreach (ulong offset in offsets)
        {
            if ((count > 0 && offset <= previous) || !bitmap.Contains(offset)) return false;
            previous = offset;
            count++;
        }
        return count == bitmap.Count;
    }
}
