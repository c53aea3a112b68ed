using System.Diagnostics;
using System.Text.Json.Nodes;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Nested;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The nested EPT MMU against the spec (docs/nested-ept.md, "The differential property"): L1's EPT hierarchies (4- and
/// 5-level, EPT A/D on and off) with L1 stores into them, L2 accesses, EPTP switches, INVEPT and memslot changes, results,
/// memslots, L1 memory and the impl's structures compared after every step; plus the generator's and the JSON's contracts.
/// </summary>
public sealed class NestedEptDifferentialTests(ITestOutputHelper output, PropertyProgress progress) : IClassFixture<PropertyProgress>
{
    [Theory]
    [MemberData(nameof(RegisteredProperties.NestedMmus), MemberType = typeof(RegisteredProperties))]
    public void Spec_and_impl_nested_EPT_MMUs_agree_after_every_operation(string property)
    {
        var time = Stopwatch.StartNew();
        var p = DiffProperties.Find(property);
        var runner = p.Check(output.WriteLine, PropertyCheck.MaxTest(p.TestCases), PropertyCheck.ReplayFromEnvironment());
        Assert.True(runner.TestsRun > 0, "the property ran no case");
        progress.Passed(property, runner.TestsRun, time.Elapsed);
    }

    [Fact]
    public void Generated_setups_are_accepted_and_enter_L2_and_the_cases_draw_both_root_policies_and_both_walk_lengths()
    {
        var policies = new HashSet<NestedRootPolicy>();
        var levels = new HashSet<int>();
        for (int seed = 0; seed < 40; seed++)
        {
            var c = NestedEptGen.Build(seed, size: 50, new NestedEptGenOptions());
            policies.Add(c.Config.RootPolicy);
            var state = NestedEptState.Create(c.Config.Caps);
            foreach (var op in c.Setup)
            {
                VmResult r;
                (state, r) = state.Step(op);
                Assert.True(r is VmResult.Ok, $"seed {seed}: setup op {op} gave {r}");
            }
            Assert.NotNull(state.Eptp);
            foreach (var op in c.AllOps.OfType<NestedEptOp.LoadEptp>()) levels.Add(op.Eptp.WalkLength);
        }
        Assert.Equal(2, policies.Count);
        Assert.Superset(new HashSet<int> { 4, 5 }, levels);
    }

    [Fact]
    public void Every_native_page_of_a_nested_vm_is_freed_when_it_is_disposed()
    {
        var pool = new NativePagePool();
        for (int seed = 0; seed < 30; seed++)
        {
            var c = NestedEptGen.Build(seed, size: 40, new NestedEptGenOptions());
            using (var engine = new ImplNestedEngine(c.Config, pool))
            {
                foreach (var op in c.AllOps) engine.Step(op);
                Assert.True(pool.PagesInUse > 0, "a VM with memslots holds native pages");
            }
            Assert.Equal(0, pool.PagesInUse);
        }
        Assert.Equal(pool.PagesAllocated, pool.PagesFreed);
    }

    [Fact]
    public void Over_the_same_operations_keep_and_resync_rebuilds_fewer_roots_than_KVMs_INVEPT_policy()
    {
        // The policy comparison docs/nested-ept.md reports: the same 200 generated cases under both policies.
        var pool = new NativePagePool();
        NestedRootCounters Run(NestedEptCase c)
        {
            using var engine = new ImplNestedEngine(c.Config, pool);
            foreach (var op in c.AllOps) engine.Step(op);
            return engine.Vm.Counters;
        }
        var keep = new List<NestedRootCounters>();
        var upstream = new List<NestedRootCounters>();
        for (int seed = 0; seed < 200; seed++)
        {
            var c = NestedEptGen.Build(seed, size: 50, new NestedEptGenOptions(NestedRootPolicy.KeepAndResync));
            keep.Add(Run(c));
            upstream.Add(Run(c with { Config = c.Config with { RootPolicy = NestedRootPolicy.Upstream } }));
        }
        long built(List<NestedRootCounters> l) => l.Sum(x => x.RootsBuilt);
        output.WriteLine($"200 cases: roots built {built(keep)} keep-and-resync, {built(upstream)} upstream; "
            + $"INVEPT kept {keep.Sum(x => x.RootsKeptAtInvept)} roots, freed {upstream.Sum(x => x.RootsFreedByInvept)}; "
            + $"cached-root hits {keep.Sum(x => x.CachedRootHits)} and {upstream.Sum(x => x.CachedRootHits)}; "
            + $"shadow pages created {keep.Sum(x => x.ShadowPagesCreated)} and {upstream.Sum(x => x.ShadowPagesCreated)}");
        Assert.True(upstream.Sum(x => x.RootsFreedByInvept) > 0, "the cases free roots at INVEPT under KVM's policy");
        Assert.True(built(keep) < built(upstream), $"keep-and-resync built {built(keep)} roots, KVM's policy {built(upstream)}");
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void The_comparison_tells_exit_qualifications_and_exits_apart_and_ignores_rejection_reasons()
    {
        // A generated case agrees; results differ by qualification bits or exit kind, never by a rejection's words.
        var c = NestedEptGen.Build(3, size: 30, new NestedEptGenOptions(NestedRootPolicy.Upstream));
        Assert.True(Families.NestedEpt.Run(c).Agreed);
        var wrongResult = new VmResult.Rejected("x");
        Assert.False(Families.NestedEpt.SameResult(new NestedEptResult.EptExit(new EptResult.Violation(new(0x9), 0x1000, null)),
            new NestedEptResult.EptExit(new EptResult.Violation(new(0x1), 0x1000, null))));
        Assert.True(Families.NestedEpt.SameResult(new VmResult.Rejected("spec's words"), wrongResult));
        Assert.False(Families.NestedEpt.SameResult(new NestedEptResult.MmioExit(0x1000), new NestedEptResult.Translated(0, 0x1000, 0x1000)));
    }

    [Fact]
    public void A_nested_case_reads_back_from_JSON_and_bad_fields_are_refused_with_their_path()
    {
        var c = NestedEptGen.Build(7, size: 20, new NestedEptGenOptions());
        string json = CaseJson.ToJson(c);
        Assert.Equal(c, CaseJson.Parse(json));
        foreach (var (mutate, expected) in new (Action<JsonNode>, string)[]
        {
            (n => n["config"]!["root_policy"] = "keep", "config.root_policy: unknown value 'keep' (expected keep-and-resync, upstream)"),
            (n => n["config"]!["maxphyaddr"] = 30, "config.maxphyaddr: MAXPHYADDR"),
            (n => n["setup"]![2]!["size"] = 3, "setup[2].size: a guest write is 4 or 8 bytes"),
            (n => n["setup"]![0]!["pages"] = "0x100001", "setup[0].pages: 0x100001 pages is more than a memslot may have here"),
            (n => n["ops"]![0]!["op"] = "vmcall", "ops[0].op: unknown nested-EPT op kind 'vmcall'"),   // invvpid is an op now (nested-ept-vpid)
        })
        {
            var node = JsonNode.Parse(json)!;
            mutate(node);
            var e = Assert.Throws<InputException>(() => CaseJson.Parse(node.ToJsonString()));
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
    }
}
