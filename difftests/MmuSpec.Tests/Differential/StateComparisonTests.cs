using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
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

    // Issue 19: the TDP comparison built the impl's whole view (every table page and host word as immutable
    // maps) after every step. Matches reads the impl once and compares in place; it must agree with the full
    // view on every step, and say "no" to any single difference, so the report still comes from the view.
    [Theory]
    [InlineData(TdpFormat.Ept, null)]
    [InlineData(TdpFormat.Ept, 47)]
    [InlineData(TdpFormat.Stage2, null)]
    public void The_TDP_in_place_comparison_agrees_with_the_full_view_and_refuses_every_difference(TdpFormat format, int? sharedBit)
    {
        var config = new VmConfig(format, sharedBit);
        int steps = 0, refused = 0;
        var kinds = new HashSet<string>();
        for (int seed = 0; seed < 30; seed++)
        {
            var c = TdpGen.Build(seed, size: 40, config);
            var spec = TdpState.Create(config);
            using var impl = new ImplTdpEngine(config, new NativePagePool());
            foreach (var op in c.Ops)
            {
                spec = spec.Step(op).State;
                impl.Step(op);
                var view = impl.View();
                bool equal = view.Equals(spec) && impl.ViewProblems.Count == 0;
                Assert.Equal(equal, impl.Matches(spec));
                Assert.Equal(equal, TdpDiff.Differences(spec, view).IsEmpty && impl.ViewProblems.Count == 0);
                steps++;
            }
            Assert.True(impl.Matches(spec));
            foreach (var (what, other) in Perturbed(spec))
            {
                if (impl.View().Equals(other)) continue;   // e.g. no roots to swap
                Assert.False(impl.Matches(other), what);
                Assert.NotEmpty(TdpDiff.Differences(other, impl.View()));
                refused++;
                kinds.Add(what);
            }
        }
        Assert.True(steps > 500, $"{steps} steps");
        Assert.True(refused > 100, $"{refused} perturbed states");
        // The memslots are compared in place (MemslotComparison): every field and the dirty logs were tried.
        Assert.Subset(kinds, MemslotKinds.ToHashSet());
        Assert.Subset(kinds, new HashSet<string> { "table child gfn", "table child level" });
    }

    /// <summary>The state with one thing changed: a host word, an entry, a page, a root, the page-size cap, a slot.</summary>
    static IEnumerable<(string, TdpState)> Perturbed(TdpState s)
    {
        if (!s.HostMemory.IsEmpty)
        {
            var (hpa, value) = s.HostMemory.First();
            yield return ("host word changed", s with { HostMemory = s.HostMemory.SetItem(hpa, value ^ 1) });
            yield return ("host word removed", s with { HostMemory = s.HostMemory.Remove(hpa) });
        }
        yield return ("host word added", s with { HostMemory = s.HostMemory.SetItem(0x7FFF_F000, 5) });
        foreach (var page in s.Pages.Values.Take(3))
        {
            yield return ("page removed", s with { Pages = s.Pages.Remove(page.Key) });
            if (page.Entries.IsEmpty) continue;
            var (index, entry) = page.Entries.Last();
            yield return ("entry removed", s with { Pages = s.Pages.SetItem(page.Key, page.Without(index)) });
            if (entry is Spte.Leaf leaf)
            {
                yield return ("leaf rights", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, leaf.WithWritable(!leaf.Writable))) });
                yield return ("leaf frame", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, leaf with { HostPfn = leaf.HostPfn + 1 })) });
            }
            if (entry is Spte.Table table)
            {
                // Each field of the child's key (the in-place comparison reads them one by one).
                var child = table.Child;
                yield return ("table child gfn", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, new Spte.Table(child with { Gfn = child.Gfn ^ 1 }))) });
                yield return ("table child level", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, new Spte.Table(child with { Role = child.Role with { Level = child.Role.Level ^ 1 } }))) });
                yield return ("table child mirror", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, new Spte.Table(child with { Role = child.Role with { Mirror = !child.Role.Mirror } }))) });
            }
            if (index < 511) yield return ("entry added", s with { Pages = s.Pages.SetItem(page.Key, page.With(index + 1, entry)) });
        }
        yield return ("roots swapped", s with { DirectRoot = null, MirrorRoot = s.DirectRoot });
        yield return ("max page size", s with { MaxPageSize = s.MaxPageSize == PageSize.Size4K ? PageSize.Size2M : PageSize.Size4K });
        if (!s.Slots.IsEmpty)
            yield return ("slot removed", s with { Memslots = new HostMemslots(s.Slots.Remove(s.Slots.Keys.First()), s.DirtyBitmaps) });
        foreach (var (what, memslots) in MemslotsPerturbed(s.Memslots))
            yield return (what, s with { Memslots = memslots });
    }

    static readonly string[] MemslotKinds =
        ["slot base gfn", "slot pages", "slot host pfn", "slot host page size", "slot read-only", "dirty logging flipped", "dirty offset added", "dirty offset removed"];

    /// <summary>The memslots with one thing changed: each field of a slot, dirty logging, an offset of a dirty log.</summary>
    static IEnumerable<(string, HostMemslots)> MemslotsPerturbed(HostMemslots m)
    {
        foreach (var slot in m.Slots.Values.Take(2))
        {
            foreach (var (field, changed) in new (string, MmuSpec.Spec.Memory.HostMemslot)[]
            {
                ("slot base gfn", slot with { BaseGfn = slot.BaseGfn + 1 }), ("slot pages", slot with { Pages = slot.Pages + 1 }),
                ("slot host pfn", slot with { HostPfnBase = slot.HostPfnBase + 1 }),
                ("slot host page size", slot with { HostPageSize = slot.HostPageSize == PageSize.Size4K ? PageSize.Size2M : PageSize.Size4K }),
                ("slot read-only", slot with { ReadOnly = !slot.ReadOnly }),
            })
                yield return (field, m with { Slots = m.Slots.SetItem(slot.Id, changed) });
            // The flag with its bitmap, so that only logging itself differs.
            var flipped = m with { Slots = m.Slots.SetItem(slot.Id, slot with { DirtyLogging = !slot.DirtyLogging }) };
            yield return ("dirty logging flipped", slot.DirtyLogging
                ? flipped with { DirtyBitmaps = m.DirtyBitmaps.Remove(slot.Id) }
                : flipped with { DirtyBitmaps = m.DirtyBitmaps.SetItem(slot.Id, []) });
        }
        foreach (var (id, offsets) in m.DirtyBitmaps.Take(2))
        {
            ulong fresh = offsets.IsEmpty ? 0 : offsets.Max + 1;
            yield return ("dirty offset added", m with { DirtyBitmaps = m.DirtyBitmaps.SetItem(id, offsets.Add(fresh)) });
            if (!offsets.IsEmpty)
                yield return ("dirty offset removed", m with { DirtyBitmaps = m.DirtyBitmaps.SetItem(id, offsets.Remove(offsets.Min)) });
        }
    }

    // The shadow family's comparison, the same way (ImplShadowEngine.Matches).
    [Theory]
    [InlineData(PagingMode.Bits32, false)]
    [InlineData(PagingMode.Long4, false)]
    [InlineData(null, true)]
    public void The_shadow_in_place_comparison_agrees_with_the_full_view_and_refuses_every_difference(PagingMode? mode, bool roots)
    {
        var options = new ShadowGenOptions(mode, Roots: roots);
        int steps = 0, refused = 0;
        var kinds = new HashSet<string>();
        for (int seed = 0; seed < 25; seed++)
        {
            var c = ShadowGen.Build(seed, size: 40, options);
            var spec = ShadowState.Create(c.Config);
            using var impl = new ImplShadowEngine(c.Config, new NativePagePool());
            foreach (var op in c.AllOps)
            {
                spec = spec.Step(op).State;
                impl.Step(op);
                bool equal = ShadowDiff.Differences(spec, impl.View()).IsEmpty;
                Assert.Equal(equal, impl.Matches(spec));
                steps++;
            }
            if (!impl.Matches(spec)) continue;
            foreach (var (what, other) in ShadowPerturbed(spec))
            {
                if (ShadowDiff.Differences(other, impl.View()).IsEmpty) continue;   // e.g. nothing to change
                Assert.False(impl.Matches(other), what);
                refused++;
                kinds.Add(what);
            }
        }
        Assert.True(steps > 500, $"{steps} steps");
        Assert.True(refused > 100, $"{refused} perturbed states");
        Assert.Subset(kinds, MemslotKinds.ToHashSet());
    }

    static IEnumerable<(string, ShadowState)> ShadowPerturbed(ShadowState s)
    {
        if (!s.HostMemory.IsEmpty)
        {
            var (hpa, value) = s.HostMemory.First();
            yield return ("host word changed", s with { HostMemory = s.HostMemory.SetItem(hpa, value ^ 1) });
            yield return ("host word removed", s with { HostMemory = s.HostMemory.Remove(hpa) });
        }
        yield return ("host word added", s with { HostMemory = s.HostMemory.SetItem(0x7FFF_F000, 5) });
        foreach (var page in s.Pages.Values.Take(3))
        {
            yield return ("page removed", s with { Pages = s.Pages.Remove(page.Key) });
            yield return ("unsync flipped", s with { Pages = s.Pages.SetItem(page.Key, page.WithUnsync(!page.Unsync)) });
            yield return ("write flooding", s with { Pages = s.Pages.SetItem(page.Key, page.WithWriteFlooding(page.WriteFlooding + 1)) });
            if (page.Entries.IsEmpty) continue;
            var (index, entry) = page.Entries.Last();
            yield return ("entry removed", s with { Pages = s.Pages.SetItem(page.Key, page.Without(index)) });
            if (entry is ShadowEntry.Leaf leaf)
            {
                // Every field of a leaf, one at a time (the in-place comparison reads them one by one).
                var r = leaf.Rights;
                foreach (var (field, changed) in new (string, ShadowEntry)[]
                {
                    ("leaf writable", leaf with { Writable = !leaf.Writable }), ("leaf gfn", leaf with { Gfn = leaf.Gfn ^ 1 }),
                    ("leaf pfn", leaf with { HostPfn = leaf.HostPfn ^ 1 }), ("leaf user", leaf with { Rights = r with { User = !r.User } }),
                    ("leaf rights writable", leaf with { Rights = r with { Writable = !r.Writable } }),
                    ("leaf no-execute", leaf with { Rights = r with { NoExecute = !r.NoExecute } }),
                    ("leaf protection key", leaf with { Rights = r with { ProtectionKey = r.ProtectionKey ^ 1 } }),
                    ("table for a leaf", new ShadowEntry.Table(page.Key)),
                })
                    yield return (field, s with { Pages = s.Pages.SetItem(page.Key, page.With(index, changed)) });
            }
            if (entry is ShadowEntry.Table table)
            {
                yield return ("table child gfn", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, new ShadowEntry.Table(table.Child with { Gfn = table.Child.Gfn ^ 1 }))) });
                yield return ("table child role", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, new ShadowEntry.Table(table.Child with { Role = table.Child.Role with { Level = table.Child.Role.Level ^ 1 } }))) });
                yield return ("leaf for a table", s with { Pages = s.Pages.SetItem(page.Key, page.With(index, new ShadowEntry.Leaf(table.Child.Gfn, 0, new TranslationRights(false, false, false, 0), false))) });
            }
            if (index < 511) yield return ("entry added", s with { Pages = s.Pages.SetItem(page.Key, page.With(index + 1, entry)) });
        }
        yield return ("pcide flipped", s with { GuestPcide = !s.GuestPcide });
        yield return ("roots dropped", s with { Roots = ShadowRoots.None });
        if (!s.Slots.IsEmpty)
            yield return ("slot removed", s with { Memslots = new HostMemslots(s.Slots.Remove(s.Slots.Keys.First()), s.DirtyBitmaps) });
        foreach (var (what, memslots) in MemslotsPerturbed(s.Memslots))
            yield return (what, s with { Memslots = memslots });
    }
}
