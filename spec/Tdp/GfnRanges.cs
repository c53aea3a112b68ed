using System.Collections.Immutable;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>Gfns [<paramref name="Start"/>, <paramref name="End"/>): what a TLB flush names and a huge leaf covers.</summary>
public readonly record struct GfnRange(ulong Start, ulong End)
{
    /// <summary>The <paramref name="count"/> gfns from <paramref name="start"/>.</summary>
    public static GfnRange OfCount(ulong start, ulong count) => new(start, start + count);

    public ulong Count => End > Start ? End - Start : 0;
    public bool IsEmpty => End <= Start;
    public bool Contains(ulong gfn) => gfn >= Start && gfn < End;
    public bool Overlaps(GfnRange other) => Start < other.End && other.Start < End;

    public override string ToString() => $"[{Bits.Hex(Start)}, {Bits.Hex(End)})";
}

/// <summary>
/// A set of gfns, kept as sorted, disjoint, non-adjacent ranges, so a 1 GiB leaf is one range and
/// not 262,144 gfns. Immutable; equal when the sets are equal.
/// </summary>
public sealed class GfnRanges : IEquatable<GfnRanges>
{
    GfnRanges(ImmutableArray<GfnRange> ranges) => Ranges = ranges;

    public static GfnRanges Empty { get; } = new(ImmutableArray<GfnRange>.Empty);

    /// <summary>The ranges, ascending, none empty, none touching another.</summary>
    public ImmutableArray<GfnRange> Ranges { get; }

    public bool IsEmpty => Ranges.IsEmpty;

    /// <summary>How many gfns the set holds.</summary>
    public ulong Count => Ranges.Aggregate(0UL, (n, r) => n + r.Count);

    /// <summary>The union of <paramref name="ranges"/> (in any order, overlapping or not; empty ones ignored).</summary>
    public static GfnRanges Of(IEnumerable<GfnRange> ranges)
    {
        var sorted = ranges.Where(r => !r.IsEmpty).OrderBy(r => r.Start).ToList();
        var merged = ImmutableArray.CreateBuilder<GfnRange>();
        foreach (var r in sorted)
        {
            if (merged.Count > 0 && r.Start <= merged[^1].End)
                merged[^1] = merged[^1] with { End = Math.Max(merged[^1].End, r.End) };
            else
                merged.Add(r);
        }
        return merged.Count == 0 ? Empty : new GfnRanges(merged.ToImmutable());
    }

    public static GfnRanges Of(params GfnRange[] ranges) => Of((IEnumerable<GfnRange>)ranges);

    public bool Contains(ulong gfn) => Ranges.Any(r => r.Contains(gfn));

    public GfnRanges Union(GfnRanges other) => Of(Ranges.Concat(other.Ranges));

    /// <summary>The gfns of this set that <paramref name="other"/> does not hold.</summary>
    public GfnRanges Except(GfnRanges other)
    {
        var left = new List<GfnRange>();
        foreach (var r in Ranges)
        {
            ulong cursor = r.Start;
            foreach (var o in other.Ranges)
            {
                if (o.End <= cursor) continue;
                if (o.Start >= r.End) break;
                if (o.Start > cursor) left.Add(new GfnRange(cursor, o.Start));
                cursor = Math.Max(cursor, o.End);
                if (cursor >= r.End) break;
            }
            if (cursor < r.End) left.Add(new GfnRange(cursor, r.End));
        }
        return Of(left);
    }

    /// <summary>Every gfn of <paramref name="other"/> is in this set.</summary>
    public bool Covers(GfnRanges other) => other.Except(this).IsEmpty;

    public bool Equals(GfnRanges? other) => other is not null && Ranges.SequenceEqual(other.Ranges);
    public override bool Equals(object? obj) => Equals(obj as GfnRanges);
    public override int GetHashCode() => Ranges.Length == 0 ? 0 : HashCode.Combine(Ranges.Length, Ranges[0]);

    public override string ToString() => IsEmpty ? "none" : string.Join(", ", Ranges);
}
