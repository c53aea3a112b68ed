namespace MmuSpec.Harness.Running;

/// <summary>How a shrink went: the smallest failing case found, the candidates tried, the ones taken.</summary>
/// <param name="HitLimit">The run limit stopped it before a fixpoint.</param>
public sealed record ShrinkResult(object Case, int Runs, int Taken, bool HitLimit);

/// <summary>A list of operations inside a case that single deletions may shorten.</summary>
public sealed record OpList<T>(string Name, Func<T, int> Count, Func<T, int, T> Remove);

/// <summary>
/// Shrinks a failing case further, outside FsCheck (<c>mmuspec replay FILE --shrink</c>): the
/// property's own shrinker (<see cref="DiffProperty{T}.Arbitrary"/>) greedily to a fixpoint (the first
/// candidate that still fails is taken, and the search starts again from it), then one pass that
/// tries deleting each single operation, setup operations included, from the last to the first,
/// keeping every deletion after which the case still fails; both again while the pass deletes.
/// </summary>
public static class CaseShrinker
{
    public const int DefaultMaxRuns = 100_000;

    /// <summary>
    /// Shrinks <paramref name="c"/>, a case of <paramref name="property"/>, while <paramref name="fails"/>
    /// holds (default: the property does not hold; an exception counts as a failure, as in FsCheck).
    /// <paramref name="progress"/> hears the run count after every run.
    /// </summary>
    public static ShrinkResult Shrink(DiffProperty property, object c, Func<object, bool>? fails = null,
        int maxRuns = DefaultMaxRuns, Action<int>? progress = null)
    {
        var failing = fails ?? (x => Fails(property, x));
        // Only candidates within CaseRules: outside them the spec throws, and a throw counts as a failure.
        return property.Shrink(c, x => CaseRules.Obeys(x) && failing(x), maxRuns, progress);
    }

    /// <summary>The property does not hold on <paramref name="c"/>; an exception counts as a failure, as in FsCheck.</summary>
    public static bool Fails(DiffProperty property, object c)
    {
        try { return !property.Holds(c); }
        catch (Exception) { return true; }
    }

    /// <summary>The operation lists of a case type that the deletion pass shortens: ops first, then setup.</summary>
    public static IReadOnlyList<OpList<T>> Lists<T>() where T : notnull => Families.Of<T>().OpLists;

    /// <summary>The shrink loop itself, for any case type, shrinker and predicate.</summary>
    public static ShrinkResult Shrink<T>(T start, Func<T, bool> fails, Func<T, IEnumerable<T>> shrinker, IReadOnlyList<OpList<T>> lists,
        int maxRuns = DefaultMaxRuns, Action<int>? progress = null) where T : notnull
    {
        int runs = 0, taken = 0;
        bool Fails(T candidate)
        {
            runs++;
            progress?.Invoke(runs);
            return fails(candidate);
        }

        var c = start;
        bool deleted;
        do
        {
            // The property's shrinker, greedily to a fixpoint.
            for (bool took = true; took && runs < maxRuns;)
            {
                took = false;
                foreach (var candidate in shrinker(c))
                {
                    if (runs >= maxRuns) break;
                    if (Fails(candidate)) { c = candidate; taken++; took = true; break; }
                }
            }
            // Single deletions, last to first, so the indices still to try do not move.
            deleted = false;
            foreach (var list in lists)
                for (int i = list.Count(c) - 1; i >= 0 && runs < maxRuns; i--)
                {
                    var candidate = list.Remove(c, i);
                    if (Fails(candidate)) { c = candidate; taken++; deleted = true; }
                }
        }
        while (deleted && runs < maxRuns);
        return new ShrinkResult(c, runs, taken, runs >= maxRuns);
    }
}
