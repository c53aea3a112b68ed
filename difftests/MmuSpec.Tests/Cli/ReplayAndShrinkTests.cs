using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// What <c>mmuspec replay FILE</c> and <c>replay FILE --shrink</c> run on: a file's case traced step
/// by step on both sides, both states side by side, and the shrink loop (the property's shrinker to
/// a fixpoint, then single deletions) on synthetic failing predicates, for every case type.
/// </summary>
public sealed class ReplayAndShrinkTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("wt-cex-tests-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData("walk-any-mode")]
    [InlineData("tdp-ept-shared51")]
    [InlineData("shadow-roots-upstream")]
    public void A_file_of_an_agreeing_case_replays_every_step_and_agrees(string name)
    {
        var p = DiffProperties.Find(name);
        var c = CaseSamples.Draw(p, 12)[^1];   // the largest of the draw
        string path = CounterexampleFile.Save(CounterexampleFile.Create(p, c), dir);

        var x = CounterexampleFile.Load(path);
        Assert.False(CaseShrinker.Fails(x.Property, x.Case));       // --shrink: nothing to shrink
        var t = CaseRuns.Trace(x.Case);
        Assert.True(t.Agreed);
        var ops = Ops(x.Case);
        int boot = x.Case is WalkCase ? 1 : 0;
        Assert.Equal(ops.Count + boot, t.Rows.Length);
        if (boot == 1) Assert.Equal("boot", t.Rows[0].Step);
        for (int i = 0; i < ops.Count; i++)
        {
            var row = t.Rows[i + boot];
            Assert.Equal((i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), row.Step);
            Assert.Equal(ops[i], row.Op);
            Assert.Equal("same", row.Impl);
            Assert.False(row.Divergent);
            Assert.NotEmpty(row.Spec);
        }
        Assert.Equal($"all {ops.Count} steps agree", t.Tail);
        Assert.StartsWith("spec and impl agree on all", t.Report, StringComparison.Ordinal);
        Assert.Empty(t.State);
        Assert.Null(t.StateNote);
    }

    static List<string> Ops(object c) => c switch
    {
        WalkCase w => [.. w.Ops.Select(o => o.ToString())],
        TdpCase t => [.. t.Ops.Select(o => o.ToString())],
        ShadowCase s => [.. s.AllOps.Select(o => o.ToString())],
        _ => throw new ArgumentException(c.GetType().Name),
    };

    [Fact]
    public void The_state_dump_shows_both_sides_and_marks_what_differs()
    {
        var c = ShadowGen.Build(11, 40, new ShadowGenOptions(PagingMode.Long4));
        ShadowState? withEntries = null;
        var state = ShadowState.Create(c.Config);
        foreach (var op in c.AllOps)
        {
            state = state.Step(op).State;
            if (state.Pages.Values.Any(p => p.Entries.Count > 0)) withEntries = state;
        }
        var spec = withEntries ?? throw new Xunit.Sdk.XunitException("no shadow page with entries in the whole case");
        var (key, page) = spec.Pages.First(kv => kv.Value.Entries.Count > 0);
        int index = page.Entries.Keys.First();
        var impl = spec with { Pages = spec.Pages.SetItem(key, page.Without(index)) };

        var same = CaseRuns.ShadowStateRows(spec, spec).ToList();
        Assert.All(same, r => Assert.False(r.Differs, r.Item));
        Assert.Contains(same, r => r.Item == "current root");

        var rows = CaseRuns.ShadowStateRows(spec, impl).ToList();
        var differ = rows.Where(r => r.Differs).ToList();
        Assert.Equal(2, differ.Count);                                     // the page's entry count, and the entry
        Assert.Equal($"page {key} [{index}]", differ[1].Item);
        Assert.Equal(page.Entries[index].ToString(), differ[1].Spec);
        Assert.Equal("-", differ[1].Impl);

        var (kept, hidden) = CaseRuns.LimitRows(rows, 5);
        Assert.Equal(5, kept.Length);
        Assert.Equal(rows.Count - 5, hidden);
        Assert.Equal(2, kept.Count(r => r.Differs));                      // differing rows are kept first
        Assert.Equal(kept.Select(r => rows.IndexOf(r)).Order(), kept.Select(r => rows.IndexOf(r)));   // in their order
    }

    [Fact]
    public void The_walk_and_tdp_state_dumps_compare_registers_entries_and_memory()
    {
        var cpu = new CpuState(new PagingControls(PagingMode.Pae), 0x1000, [0x2001, 0, 0, 0]);
        var memory = ImmutableSortedDictionary<ulong, ulong>.Empty.Add(0x1000, 0x2001).Add(0x2000, 0x3003);
        var a = new MachineView(cpu, memory);
        var b = new MachineView(cpu.WithPdptes([0x2001, 0, 0, 0x5001]), memory.SetItem(0x2000, 0x3063));
        var walk = CaseRuns.WalkState(a, b).ToList();
        Assert.Equal(["PDPTE3", "memory [0x2000]"], walk.Where(r => r.Differs).Select(r => r.Item));
        Assert.Equal(("0x3003", "0x3063"), (walk[^1].Spec, walk[^1].Impl));

        var tdp = TdpState.Create(new VmConfig(TdpFormat.Ept));
        tdp = tdp.Step(new TdpOp.CreateSlot(3, 0x100, 0x200, 0x1000, PageSize.Size4K, ReadOnly: false)).State;
        tdp = tdp.Step(new TdpOp.AccessGpa(0x100_123, AccessType.Write)).State;
        Assert.NotEmpty(tdp.Pages);
        var moved = tdp with { Memslots = tdp.Memslots.Move(tdp.Slots[3], 0x900), MaxPageSize = PageSize.Size2M };
        Assert.Equal(["max page size", "slot 3"], CaseRuns.TdpStateRows(tdp, moved).Where(r => r.Differs).Select(r => r.Item));
    }

    // ---- the shrink loop, on synthetic failing predicates (spec and impl agree on every real case) ----

    [Fact]
    public void A_tdp_case_shrinks_to_the_two_ops_the_predicate_needs_made_plain()
    {
        var p = DiffProperties.Find("tdp-ept");
        var drawn = (TdpCase)CaseSamples.Draw(p, 30)[^1];
        var c = drawn.WithOps(drawn.Ops.Insert(drawn.Ops.Length / 3, new TdpOp.ZapAll())
            .Insert(2 * drawn.Ops.Length / 3, new TdpOp.AccessGpa(0x1234_5678, AccessType.Write)));
        static bool Fails(object x) => ((TdpCase)x).Ops is var ops && ops.Any(o => o is TdpOp.ZapAll) && ops.Any(o => o is TdpOp.AccessGpa);
        Assert.True(c.Ops.Length > 10);

        var r = CaseShrinker.Shrink(p, c, Fails);
        var shrunk = Assert.IsType<TdpCase>(r.Case);
        Assert.True(Fails(shrunk));
        Assert.Equal(2, shrunk.Ops.Length);
        Assert.Single(shrunk.Ops.OfType<TdpOp.ZapAll>());
        var access = Assert.Single(shrunk.Ops.OfType<TdpOp.AccessGpa>());
        Assert.Equal(AccessType.Read, access.Type);                      // the property's shrinker made it plain
        Assert.Equal(0UL, access.Gpa & 0xFFF);
        Assert.False(r.HitLimit);
        Assert.True(r.Taken > 0 && r.Runs >= r.Taken);
        AssertNoSingleDeletionFails(shrunk, Fails);
    }

    [Fact]
    public void A_walk_case_loses_all_setup_writes_the_predicate_does_not_need()
    {
        var p = DiffProperties.Find("walk-long4");
        var drawn = (WalkCase)CaseSamples.Draw(p, 30)[^1];
        var c = drawn.WithOps(drawn.Ops.Add(new Op.LoadCr3(0x5000)).Add(new Op.GuestAccess(Access.Write(0x7123, Privilege.User))));
        static bool Fails(object x) => ((WalkCase)x).Ops is var ops
            && ops.Any(o => o is Op.LoadCr3) && ops.Any(o => o is Op.GuestAccess { Access.Type: AccessType.Write });
        Assert.NotEmpty(c.Setup);

        var shrunk = Assert.IsType<WalkCase>(CaseShrinker.Shrink(p, c, Fails).Case);
        Assert.Empty(shrunk.Setup);
        Assert.Equal(2, shrunk.Ops.Length);
        var access = Assert.Single(shrunk.Ops.OfType<Op.GuestAccess>()).Access;
        Assert.Equal((Privilege.Supervisor, 0UL), (access.Privilege, access.Gva & 0xFFF));   // made plain by the shrinker
        AssertNoSingleDeletionFails(shrunk, Fails);
    }

    [Fact]
    public void A_shadow_case_shrinks_its_setup_and_its_ops()
    {
        var p = DiffProperties.Find("shadow-long5");
        var drawn = (ShadowCase)CaseSamples.Draw(p, 30)[^1];
        var c = drawn.WithOps(drawn.Ops.Add(new ShadowOp.FlushTlb()))
            .WithSetup(drawn.Setup.Insert(0, new ShadowOp.CreateSlot(9, 0x10_0000, 4, 0x77000, ReadOnly: true)));
        static bool Fails(object x) => x is ShadowCase s
            && s.Setup.Any(o => o is ShadowOp.CreateSlot { Id: 9 }) && s.Ops.Any(o => o is ShadowOp.FlushTlb);
        Assert.True(c.Length > 20);

        var shrunk = Assert.IsType<ShadowCase>(CaseShrinker.Shrink(p, c, Fails).Case);
        var slot = Assert.IsType<ShadowOp.CreateSlot>(Assert.Single(shrunk.Setup));
        Assert.False(slot.ReadOnly);                                       // made writable by the shrinker
        Assert.IsType<ShadowOp.FlushTlb>(Assert.Single(shrunk.Ops));
    }

    [Fact]
    public void A_step_whose_only_difference_is_a_missed_flush_is_labelled_so_in_the_trace()
    {
        // The lines TdpDiff writes for a missed flush: a 2 MiB leaf zapped by a one-page range, the impl flushing nothing.
        var s = TdpState.Create(new VmConfig(TdpFormat.Ept));
        foreach (var op in new TdpOp[] { new TdpOp.CreateSlot(0, 0x200, 0x400, 0x1200, PageSize.Size2M, ReadOnly: false), new TdpOp.AccessGpa(0x23_4000, AccessType.Read) })
            s = s.Step(op).State;
        var zap = new TdpOp.ZapRange(0x234, 0x235);
        var missed = TdpDiff.MissedFlushes(TdpTlb.MustFlush(s, s.Step(zap).State), GfnRanges.Empty);
        Assert.Contains(missed, l => l.Contains("did not flush gfns [0x200, 0x400)"));

        Divergence At(ImmutableArray<string> diffs) => new(2, zap.ToString(), "done", "done", diffs);
        Assert.Equal("same result, TLB flush missed", CaseRuns.Same("done", "done", At(missed)));
        Assert.Equal("same result, state differs", CaseRuns.Same("done", "done", At([.. missed, "leaf 0x200: spec 2M | impl none"])));
        Assert.Equal("same result, state differs", CaseRuns.Same("done", "done", At([])));
        Assert.Equal("same", CaseRuns.Same("done", "done", null));
        Assert.Equal("rejected", CaseRuns.Same("done", "rejected", At(missed)));
    }

    [Fact]
    public void The_property_shrinkers_drop_chunks_down_to_a_lone_element()
    {
        // Halves first, then quarters, ..., then single elements; a lone element is dropped too
        // (it used to survive: half of one is zero), so a case that fails with no operation at all
        // shrinks to one.
        Assert.Equal([[]], WalkShrink.DropChunks(ImmutableArray.Create(7)).Select(a => a.ToArray()));
        Assert.Empty(WalkShrink.DropChunks(ImmutableArray<int>.Empty));
        Assert.Equal([[3, 4], [1, 2], [2, 3, 4], [1, 3, 4], [1, 2, 4], [1, 2, 3]],
            WalkShrink.DropChunks(ImmutableArray.Create(1, 2, 3, 4)).Select(a => a.ToArray()));
        var c = CaseSamples.EveryWalkOp() with { Ops = [new Op.LoadCr3(0x5000)] };
        Assert.Contains(WalkShrink.Candidates(c), x => x.Ops.IsEmpty && x.Setup == c.Setup);
    }

    [Fact]
    public void The_deletion_pass_alone_removes_every_op_it_can_even_a_lone_setup_write()
    {
        var c = CaseSamples.EveryWalkOp() with { Setup = [new Op.WriteGuest(0x1000, 0x3, 8)] };
        static bool Fails(WalkCase x) => x.Ops.Any(o => o is Op.LoadCr3);
        var r = CaseShrinker.Shrink(c, Fails, _ => [], CaseShrinker.Lists<WalkCase>());
        var shrunk = (WalkCase)r.Case;
        Assert.Empty(shrunk.Setup);
        Assert.IsType<Op.LoadCr3>(Assert.Single(shrunk.Ops));
        Assert.Equal(c.Ops.Length - 1 + 1, r.Taken);                     // four ops and the setup write
        // One pass over 5 ops and the setup, then a second pass that deletes nothing.
        Assert.Equal(5 + 1 + 1, r.Runs);
    }

    [Fact]
    public void The_run_limit_stops_the_shrink()
    {
        var c = CaseSamples.EveryShadowOp();
        var r = CaseShrinker.Shrink(c, _ => true, ShadowShrink.Candidates, CaseShrinker.Lists<ShadowCase>(), maxRuns: 7);
        Assert.True(r.HitLimit);
        Assert.Equal(7, r.Runs);
    }

    [Fact]
    public void A_shrunk_file_keeps_where_the_case_came_from_and_replays()
    {
        var p = DiffProperties.Find("tdp-stage2");
        var c = (TdpCase)CaseSamples.Draw(p, 20)[^1];
        var x = CounterexampleFile.Create(p, c, "11,13,17", seed: 99, batch: 3);
        var r = CaseShrinker.Shrink(p, c, o => ((TdpCase)o).Ops.Any(op => op is TdpOp.CreateSlot));
        var shrunk = CounterexampleFile.Create(p, r.Case, x.ReplayToken, x.Seed, x.Batch);
        string path = Path.Combine(dir, "x.shrunk.json");
        CounterexampleFile.WriteTo(shrunk, path);
        var back = CounterexampleFile.Load(path);
        Assert.Equal(("11,13,17", 99UL, 3L), (back.ReplayToken, back.Seed!.Value, back.Batch!.Value));
        Assert.Single(((TdpCase)back.Case).Ops);
        Assert.True(CaseRuns.Trace(back.Case).Agreed);
    }

    [Theory]
    [InlineData("1,2,3", "replay token '1,2,3': the gamma 2 is even; SplitMix needs an odd gamma")]
    [InlineData("1,0,3", "the gamma 0 is even")]
    [InlineData("1,3,999999999", "replay token '1,3,999999999': the size 999999999 is outside 0..300 (the deep tier's largest size)")]
    [InlineData("1,3,301", "the size 301 is outside 0..300")]
    [InlineData("1,3,-5", "the size -5 is outside 0..300")]
    [InlineData("1,3", "replay token '1,3' is not 'seed,gamma,size'")]
    [InlineData("-1,3,5", "is not 'seed,gamma,size'")]
    [InlineData("1,3,5,7", "is not 'seed,gamma,size'")]
    [InlineData("1,3,99999999999", "is not 'seed,gamma,size'")]
    public void A_bad_replay_token_is_a_format_error_that_says_why(string token, string expected)
    {
        var e = Assert.Throws<FormatException>(() => PropertyCheck.ParseReplay(token));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        // MMUSPEC_REPLAY, as dotnet test reads it: the same reason, naming the variable.
        var env = Assert.Throws<ArgumentException>(() => PropertyCheck.ReplayFrom(token));
        Assert.StartsWith("MMUSPEC_REPLAY: ", env.Message, StringComparison.Ordinal);
        Assert.Contains(expected, env.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Tokens_at_the_size_bounds_replay_and_round_trip()
    {
        foreach (string token in new[] { "18446744073709551615,18446744073709551615,0", "1,3,300", " 7 , 9 , 100 " })
        {
            var r = PropertyCheck.ParseReplay(token);
            Assert.Equal(token.Replace(" ", "", StringComparison.Ordinal), PropertyCheck.FormatReplay(r));
        }
        Assert.Null(PropertyCheck.ReplayFrom(null));
        Assert.Null(PropertyCheck.ReplayFrom("  "));
    }

    [Fact]
    public void Shrinking_never_leaves_what_every_generated_case_obeys()
    {
        // Boot in PAE, switch to 4-level paging, load a CR3 with a reserved bit (#GP there). Dropping
        // the mode switch would leave a 64-bit CR3 load in PAE paging, which the spec refuses by
        // throwing: a shrinker that counts the throw as "still fails" would end on a case that is no
        // guest event, and the file it writes would be refused on replay.
        var p = (DiffProperty<WalkCase>)DiffProperties.Find("walk-pae");
        var c = CaseSamples.EveryWalkOp() with
        {
            Ops = [new Op.SetControls(new PagingControls(PagingMode.Long4, maxPhyAddr: 36)), new Op.LoadCr3(0x8000_0000_0000_1000)],
        };
        CaseRules.Check(c, "");
        Assert.DoesNotContain(p.Arbitrary.Shrinker(c), x => !CaseRules.Obeys(x));
        var r = CaseShrinker.Shrink(p, c, fails: x => ((WalkCase)x).Ops.Any(o => o is Op.LoadCr3));
        Assert.True(CaseRules.Obeys(r.Case), CaseRuns.Render(r.Case));
        Assert.Contains(((WalkCase)r.Case).Ops, o => o is Op.SetControls);   // kept: without it the load is out of bounds
    }

    [Fact]
    public void Counts_of_one_are_singular_in_traces_and_reports()
    {
        // "all 1 steps agree", "1 cases", "setup (1 writes)" were printed.
        var c = CaseSamples.EveryWalkOp() with { Setup = [new Op.WriteGuest(0x1020, 0x2001, 8)], Ops = [new Op.LoadCr3(0x1000)] };
        var t = CaseRuns.Trace(c);
        Assert.Equal("the one step agrees", t.Tail);
        Assert.StartsWith("spec and impl agree on the one step", t.Report, StringComparison.Ordinal);
        Assert.Contains("setup (1 write):", c.Render(null), StringComparison.Ordinal);
        Assert.Equal("all 2 steps agree", CaseRuns.StepsAgree(2));
        Assert.Equal(("1 case", "3 cases", "5000000000 cases"), (CaseRuns.Count(1L, "case"), CaseRuns.Count(3L, "case"), CaseRuns.Count(5_000_000_000L, "case")));
        var p = DiffProperties.Find("walk-pae");
        var runner = PropertyCheck.Check(p.Name, p, _ => { }, 20, PropertyCheck.SeededStart(3, p.Name), throwOnFailure: false,
            holds: _ => false, counterexampleDirectory: dir);
        Assert.Contains("walk-pae: FAILED after 1 case, shrunk ", runner.FailureReport, StringComparison.Ordinal);
    }

    static void AssertNoSingleDeletionFails<T>(T c, Func<object, bool> fails) where T : notnull
    {
        foreach (var list in CaseShrinker.Lists<T>())
            for (int i = 0; i < list.Count(c); i++)
                Assert.False(fails(list.Remove(c, i)!), $"deleting {list.Name}[{i}] still fails: not shrunk to a fixpoint");
    }
}
