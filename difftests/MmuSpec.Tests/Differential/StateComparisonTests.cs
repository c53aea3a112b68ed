using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Walk;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The state comparisons' faster paths (one pass over impl memory, sorted merges, pairwise map
/// equality) report exactly what the full comparison reports: a difference in any word is still
/// named at the step it appears.
/// </summary>
public sealed class StateComparisonTests
{
    /// <summary>The walk family's comparison: the one-pass check first, the merge over the impl's words when it fails.</summary>
    static ImmutableArray<string> Fast(SpecEngine spec, ImplWalkEngine impl)
    {
        var memory = spec.Machine.Memory.Written;
        IEnumerable<KeyValuePair<ulong, ulong>> implMemory = impl.HoldsExactly(memory) ? memory : impl.Words();
        return MachineView.Differences(spec.Machine.Cpu, memory, impl.Cpu(), implMemory);
    }

    [Fact]
    public void A_word_changed_added_or_cleared_on_the_impl_alone_is_reported_as_the_full_views_report_it()
    {
        int checkedSteps = 0, perturbed = 0;
        for (int seed = 0; seed < 40; seed++)
        {
            var c = WalkGen.Build(seed, size: 30, mode: null);
            var machine = c.BootSpec();
            using var impl = ImplWalkEngine.Boot(c, new NativePagePool());
            if (machine is null || impl is null) continue;
            var spec = new SpecEngine(machine);
            for (int k = 0; k < c.Ops.Length; k++)
            {
                spec.Step(c.Ops[k]);
                impl.Step(c.Ops[k]);
                Assert.Empty(Fast(spec, impl));
                checkedSteps++;
            }
            // Then one impl-only write per kind: a spec word changed, a zero word made non-zero (first,
            // last and past the spec's words), a spec word cleared.
            var words = spec.Machine.Memory.Written;
            if (words.IsEmpty) continue;
            var (first, last) = (words.Keys.First(), words.Keys.Last());
            ulong past = WalkGen.Slots.Max(s => (s.BaseGfn + s.Pages) << 12) - 8;
            foreach (var (gpa, value) in new[] { (first, words[first] ^ 0x40), (last, 0UL), (first, 0UL), (past, 0x1234UL), (0x8UL, 0x77UL) })
            {
                ulong before = words.GetValueOrDefault(gpa);
                if (before == value) continue;
                impl.Step(new Op.WriteGuest(gpa, value, 8));
                var fast = Fast(spec, impl);
                Assert.NotEmpty(fast);
                Assert.Equal(MachineView.Differences(spec.View(), impl.View()).ToArray(), fast.ToArray());
                Assert.Contains(fast, l => l.Contains($"memory [{Bits.Hex(gpa)}]"));
                impl.Step(new Op.WriteGuest(gpa, before, 8));
                Assert.Empty(Fast(spec, impl));
                perturbed++;
            }
        }
        Assert.True(checkedSteps > 200, $"{checkedSteps} steps checked");
        Assert.True(perturbed > 100, $"{perturbed} perturbations");
    }

    [Fact]
    public void The_sorted_merge_visits_the_union_of_the_keys_in_order_with_each_sides_value()
    {
        var random = new Random(19);
        for (int round = 0; round < 200; round++)
        {
            var a = Map(random); var b = Map(random);
            var expected = a.Keys.Union(b.Keys).Order().Select(k => (k, a.GetValueOrDefault(k), b.GetValueOrDefault(k))).ToList();
            Assert.Equal(expected, SortedMerge.Outer(a, b).ToList());
        }
    }

    [Fact]
    public void Maps_have_the_same_entries_only_with_equal_keys_and_values()
    {
        var random = new Random(17);
        for (int round = 0; round < 200; round++)
        {
            var a = Map(random);
            var copy = a.ToImmutableSortedDictionary();
            Assert.True(a.SameEntries(copy));
            Assert.Equal(a.SequenceEqual(copy), a.SameEntries(copy));
            var b = Map(random);
            Assert.Equal(a.SequenceEqual(b), a.SameEntries(b));
            if (a.IsEmpty) continue;
            ulong key = a.Keys.ElementAt(random.Next(a.Count));
            Assert.False(a.SameEntries(a.SetItem(key, a[key] + 1)));
            Assert.False(a.SameEntries(a.Remove(key).Add(key + 0x10000, a[key])));    // same count, another key
        }
    }

    static ImmutableSortedDictionary<ulong, ulong> Map(Random random) =>
        Enumerable.Range(0, random.Next(0, 12)).Select(_ => (ulong)random.Next(0, 24) * 8).Distinct()
            .ToImmutableSortedDictionary(k => k, _ => (ulong)random.Next(0, 3));
}
