using System.Collections.Immutable;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// Two sorted maps walked side by side: every key of either once, ascending, with each side's value
/// (default where a side lacks the key). The same keys in the same order as
/// <c>a.Keys.Union(b.Keys).Order()</c> with <c>GetValueOrDefault</c> on both, in one linear pass
/// with no set and no sort: the state comparisons run this after every step.
/// </summary>
public static class SortedMerge
{
    public static IEnumerable<(TKey Key, TValue? Spec, TValue? Impl)> Outer<TKey, TValue>(
        ImmutableSortedDictionary<TKey, TValue> spec, ImmutableSortedDictionary<TKey, TValue> impl) where TKey : notnull
    {
        // One order for both: the merge is only a union if both maps sort alike.
        if (!Equals(spec.KeyComparer, impl.KeyComparer))
            throw new ArgumentException("the maps are sorted by different comparers", nameof(impl));
        return Outer(spec, impl, spec.KeyComparer);
    }

    /// <summary>The same over two sequences each ascending by <paramref name="order"/>, without duplicate keys.</summary>
    public static IEnumerable<(TKey Key, TValue? Spec, TValue? Impl)> Outer<TKey, TValue>(
        IEnumerable<KeyValuePair<TKey, TValue>> spec, IEnumerable<KeyValuePair<TKey, TValue>> impl, IComparer<TKey> order)
    {
        using var s = spec.GetEnumerator();
        using var i = impl.GetEnumerator();
        bool hasS = s.MoveNext(), hasI = i.MoveNext();
        while (hasS || hasI)
        {
            int c = !hasI ? -1 : !hasS ? 1 : order.Compare(s.Current.Key, i.Current.Key);
            if (c < 0) { yield return (s.Current.Key, s.Current.Value, default); hasS = s.MoveNext(); }
            else if (c > 0) { yield return (i.Current.Key, default, i.Current.Value); hasI = i.MoveNext(); }
            else { yield return (s.Current.Key, s.Current.Value, i.Current.Value); hasS = s.MoveNext(); hasI = i.MoveNext(); }
        }
    }
}
