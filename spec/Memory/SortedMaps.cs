using System.Collections.Immutable;

namespace MmuSpec.Spec.Memory;

/// <summary>Content equality of the immutable sorted maps the states are made of.</summary>
public static class SortedMaps
{
    /// <summary>
    /// The same keys with equal values. What <c>SequenceEqual</c> on the maps means, compared pair by
    /// pair with the key's and value's own equality: a <see cref="KeyValuePair{TKey, TValue}"/> has no
    /// Equals of its own, and the default one boxes both pairs and reads their fields by reflection.
    /// </summary>
    public static bool SameEntries<TKey, TValue>(this ImmutableSortedDictionary<TKey, TValue> a, ImmutableSortedDictionary<TKey, TValue> b)
        where TKey : notnull
    {
        if (ReferenceEquals(a, b)) return true;     // immutable: one map equals itself
        if (a.Count != b.Count) return false;
        var keys = EqualityComparer<TKey>.Default;
        var values = EqualityComparer<TValue>.Default;
        // A mutable struct enumerator: not a using variable, which would be read-only and advance a copy.
        var other = b.GetEnumerator();
        try
        {
            foreach (var (key, value) in a)
            {
                other.MoveNext();
                if (!keys.Equals(key, other.Current.Key) || !values.Equals(value, other.Current.Value)) return false;
            }
            return true;
        }
        finally { other.Dispose(); }
    }
}
