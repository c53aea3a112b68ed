using System.Diagnostics;

namespace MmuSpec.Harness.Running;

/// <summary>
/// A situation a differential campaign can reach, named "group: name" (e.g. "guest mode: PAE",
/// "#PF error code: RSVD", "cached root (upstream): miss"). Each property family has a classifier
/// that names the situations a case reaches, judged from outside both sides: the operation, the
/// spec's result and the spec's state before and after it (docs/coverage.md lists them all).
/// </summary>
public static class Situation
{
    /// <summary>The group of a situation name: the text before the first ": ".</summary>
    public static string GroupOf(string situation)
    {
        int i = situation.IndexOf(": ", StringComparison.Ordinal);
        return i < 0 ? situation : situation[..i];
    }

    /// <summary>The name within the group: the text after the first ": ".</summary>
    public static string NameOf(string situation)
    {
        int i = situation.IndexOf(": ", StringComparison.Ordinal);
        return i < 0 ? "" : situation[(i + 2)..];
    }
}

/// <summary>
/// One row of a coverage report: a situation of a family, how often it was reached, whether a
/// property that ran expects it, and whether the family's situation list names it at all (a name
/// outside the list is a classifier bug).
/// </summary>
public sealed record CoverageRow(string Family, string Situation, long Count, bool Expected, bool Known)
{
    public string Group => Running.Situation.GroupOf(Situation);
    public bool Unreached => Expected && Count == 0;
}

/// <summary>
/// Counts the situations of every case a campaign runs, per property (classifying re-runs the spec
/// on the case, so it costs time: <see cref="Elapsed"/> is that time). Not thread-safe: a
/// campaign records from one thread at a time, however many jobs it runs (<see cref="Campaign"/>).
/// </summary>
public sealed class CoverageTally
{
    readonly Dictionary<string, Dictionary<string, long>> byProperty = new(StringComparer.Ordinal);
    readonly Stopwatch clock = new();

    /// <summary>Time spent classifying cases.</summary>
    public TimeSpan Elapsed => clock.Elapsed;

    /// <summary>Cases classified.</summary>
    public long Cases { get; private set; }

    /// <summary>Classifies <paramref name="c"/>, a case of <paramref name="property"/>, and counts every situation it reaches (each time it reaches it).</summary>
    public void Record(DiffProperty property, object c)
    {
        if (!byProperty.TryGetValue(property.Name, out var counts)) byProperty[property.Name] = counts = new(StringComparer.Ordinal);
        clock.Start();
        try { property.Classify(c, s => counts[s] = counts.GetValueOrDefault(s) + 1); }
        finally { clock.Stop(); }
        Cases++;
    }

    /// <summary>How often <paramref name="property"/>'s cases reached each situation (only those reached).</summary>
    public IReadOnlyDictionary<string, long> Of(DiffProperty property) =>
        byProperty.TryGetValue(property.Name, out var counts) ? counts : new Dictionary<string, long>();

    /// <summary>
    /// The report over <paramref name="properties"/> (those the campaign ran): per family, in the
    /// family list's order with each group's situations together, every situation some property of
    /// the family that ran expects, with its count summed over the family's properties, and every
    /// other situation the cases reached (an extra the list knows but these properties do not
    /// promise, or a name no list knows: a classifier bug, shown rather than hidden).
    /// </summary>
    public IReadOnlyList<CoverageRow> Rows(IEnumerable<DiffProperty> properties)
    {
        var rows = new List<CoverageRow>();
        foreach (var family in properties.GroupBy(p => p.Family))
        {
            var totals = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var p in family)
                foreach (var (s, n) in Of(p)) totals[s] = totals.GetValueOrDefault(s) + n;
            var known = DiffProperties.FamilySituations(family.Key);
            var expected = family.SelectMany(p => p.Situations).ToHashSet(StringComparer.Ordinal);
            var unknown = totals.Keys.Where(s => !known.Contains(s)).Order(StringComparer.Ordinal);
            foreach (var s in known.Concat(unknown).Distinct().GroupBy(Situation.GroupOf).SelectMany(g => g))
            {
                bool isExpected = expected.Contains(s);
                if (isExpected || totals.ContainsKey(s))
                    rows.Add(new CoverageRow(family.Key, s, totals.GetValueOrDefault(s), isExpected, Known: known.Contains(s)));
            }
        }
        return rows;
    }
}
