using MmuSpec.Harness.Running;
using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The situation classifiers behind `mmuspec check --coverage` (docs/coverage.md): they name only
/// situations their family's list knows, every property expects only its family's situations, the
/// walk, TDP and shadow generators reach every situation they are expected to on a fixed sample (the
/// quick tier's share of the default campaign's promise), and the two rarest TDP situations are
/// what their names say: a hand-written case reaches each.
/// </summary>
public sealed class CoverageTests(ITestOutputHelper output)
{
    const ulong Seed = 20261121;

    /// <summary>The situations the sampled cases of <paramref name="properties"/> reach, with counts.</summary>
    static SortedDictionary<string, long> Reached(IEnumerable<DiffProperty> properties, int casesPerProperty)
    {
        var tally = new CoverageTally();
        var all = properties.ToList();
        foreach (var p in all)
            foreach (var c in p.Sample(Seed, casesPerProperty)) tally.Record(p, c);
        var counts = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var row in tally.Rows(all)) counts[row.Situation] = row.Count;
        return counts;
    }

    void Print(SortedDictionary<string, long> counts)
    {
        foreach (var (s, n) in counts) output.WriteLine($"{n,8}  {s}");
    }

    [Fact]
    public void Every_property_expects_only_situations_its_family_lists_and_the_lists_have_no_repeats()
    {
        foreach (var family in new[] { DiffProperties.WalkFamily, DiffProperties.TdpFamily, DiffProperties.ShadowFamily })
        {
            var list = DiffProperties.FamilySituations(family);
            Assert.Equal(list.Count, list.Distinct().Count());
            Assert.All(list, s => Assert.Contains(": ", s));
        }
        foreach (var p in DiffProperties.All)
        {
            Assert.NotEmpty(p.Situations);
            var unknown = p.Situations.Except(DiffProperties.FamilySituations(p.Family)).ToList();
            Assert.True(unknown.Count == 0, $"{p.Name} expects situations its family does not list: {string.Join(", ", unknown)}");
        }
    }

    /// <summary>
    /// A family's generators, on a fixed sample of <paramref name="casesPerProperty"/> cases per
    /// property, reach every situation their properties expect, and the classifier names nothing
    /// the family's list lacks.
    /// </summary>
    [Theory]
    [InlineData(DiffProperties.WalkFamily, 200)]
    [InlineData(DiffProperties.TdpFamily, 150)]
    [InlineData(DiffProperties.ShadowFamily, 100)]
    public void A_familys_generators_reach_every_situation_and_the_classifier_names_no_other(string family, int casesPerProperty)
    {
        var properties = DiffProperties.All.Where(p => p.Family == family).ToList();
        var counts = Reached(properties, casesPerProperty);
        Print(counts);
        var unknown = counts.Keys.Except(DiffProperties.FamilySituations(family)).ToList();
        Assert.True(unknown.Count == 0, $"the {family} classifier names situations the list does not: {string.Join(", ", unknown)}");
        var missing = properties.SelectMany(p => p.Situations).Distinct().Where(s => counts.GetValueOrDefault(s) == 0).ToList();
        Assert.True(missing.Count == 0, $"the {family} generators no longer reach: {string.Join(", ", missing)}");
    }

    static List<string> TdpSituations(params TdpOp[] ops)
    {
        var hits = new List<string>();
        TdpCoverage.Classify(new TdpCase(new VmConfig(TdpFormat.Ept), [.. ops]), hits.Add);
        return hits;
    }

    [Fact]
    public void A_huge_leaf_protected_while_logging_is_made_writable_by_a_write_after_logging_stops()
    {
        const ulong Base = 0x200;   // 2 MiB aligned, host frames equally aligned
        var hits = TdpSituations(
            new TdpOp.CreateSlot(0, Base, 512, 0x4_0000, PageSize.Size2M, ReadOnly: false),
            new TdpOp.AccessGpa(Base << 12, AccessType.Read),                  // a 2 MiB leaf
            new TdpOp.SetDirtyLogging(0, true),                                // loses W
            new TdpOp.SetDirtyLogging(0, false),
            new TdpOp.AccessGpa((Base + 3) << 12, AccessType.Write));          // W back on the huge leaf, no split
        Assert.Contains("mapping size: 2M", hits);
        Assert.Contains("dirty logging: off -> on write-protects mappings", hits);
        Assert.Contains("access: write-protection fault, huge leaf made writable (slot not logging)", hits);
        Assert.DoesNotContain("dirty logging: write to a huge leaf splits it (4K mapped)", hits);
    }

    [Fact]
    public void A_write_to_a_huge_leaf_while_logging_splits_it_and_an_empty_zap_range_is_rejected()
    {
        const ulong Base = 0x200;
        var hits = TdpSituations(
            new TdpOp.CreateSlot(0, Base, 512, 0x4_0000, PageSize.Size2M, ReadOnly: false),
            new TdpOp.AccessGpa(Base << 12, AccessType.Read),
            new TdpOp.SetDirtyLogging(0, true),
            new TdpOp.AccessGpa((Base + 3) << 12, AccessType.Write),
            new TdpOp.ZapRange(Base + 1, Base + 1),
            new TdpOp.ZapRange(Base + 3, Base + 4));
        Assert.Contains("dirty logging: write to a huge leaf splits it (4K mapped)", hits);
        Assert.Contains("dirty logging: a write marks its page dirty", hits);
        Assert.Contains("zap: range rejected", hits);
        Assert.Contains("zap: range removes leaves", hits);
        Assert.DoesNotContain("zap: range inside a huge page", hits);   // the 2 MiB leaf is gone: 4K leaves only
    }

    [Fact]
    public void The_report_marks_unreached_extra_and_unknown_situations()
    {
        var tally = new CoverageTally();
        var fake = new DiffProperty<int>("fake", "law", FsCheck.Fluent.Arb.From(FsCheck.Fluent.Gen.Constant(0)), _ => true, _ => "", _ => 1,
            DiffProperties.WalkFamily, ["guest mode: PAE", "page size: 2M"], (_, hit) => { hit("guest mode: PAE"); hit("guest mode: 5-level"); hit("no such group: x"); });
        tally.Record(fake, 0);
        tally.Record(fake, 0);
        var rows = tally.Rows([fake]);
        Assert.Equal(new CoverageRow("walk", "guest mode: PAE", 2, Expected: true, Known: true), rows.Single(r => r.Situation == "guest mode: PAE"));
        Assert.True(rows.Single(r => r.Situation == "page size: 2M").Unreached);
        Assert.Equal(new CoverageRow("walk", "guest mode: 5-level", 2, Expected: false, Known: true), rows.Single(r => r.Situation == "guest mode: 5-level"));
        Assert.Equal(new CoverageRow("walk", "no such group: x", 2, Expected: false, Known: false), rows.Single(r => r.Situation == "no such group: x"));
        Assert.Equal(4, rows.Count);   // situations neither expected nor reached are left out
        Assert.Equal(2, tally.Cases);
    }
}
