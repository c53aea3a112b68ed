using MmuSpec.Harness.Images;
using MmuSpec.Harness.Nested;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using System.Text.Json.Nodes;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The `nested-ept-l2` generator's and JSON's contracts (the property itself runs in NestedEptDifferentialTests with the
/// nested family): setups accepted, L2 in every paging mode over EPT A/D on and off, its ops only behind the option, a
/// case read back from JSON, and the spec and impl agreeing on a hand-checked generated case.
/// </summary>
public sealed class NestedL2DifferentialTests
{
    static readonly NestedEptGenOptions L2 = new(L2Paging: true);

    [Fact]
    public void Generated_setups_enter_L2_with_paging_in_every_mode_over_EPT_AD_on_and_off()
    {
        var modes = new HashSet<PagingMode?>();
        var accessedDirty = new HashSet<bool>();
        for (int seed = 0; seed < 40; seed++)
        {
            var c = NestedEptGen.Build(seed, size: 50, L2);
            var state = NestedEptState.Create(c.Config.Caps);
            foreach (var op in c.Setup)
            {
                VmResult r;
                (state, r) = state.Step(op);
                Assert.True(r is VmResult.Ok, $"seed {seed}: setup op {op} gave {r}");
            }
            Assert.NotNull(state.L2Cpu);
            foreach (var p in c.AllOps.OfType<NestedEptOp.SetL2Paging>()) modes.Add(p.Cpu?.Controls.Mode);
            foreach (var l in c.AllOps.OfType<NestedEptOp.LoadEptp>()) accessedDirty.Add(l.Eptp.AccessedDirtyEnabled);
            Assert.Contains(c.Ops, op => op is NestedEptOp.L2GvaAccess);
        }
        Assert.Superset(new HashSet<PagingMode?> { PagingMode.Bits32, PagingMode.Pae, PagingMode.Long4, PagingMode.Long5, null }, modes);
        Assert.Equal(2, accessedDirty.Count);
    }

    [Fact]
    public void The_nested_ept_property_draws_no_L2_paging_op()
    {
        for (int seed = 0; seed < 40; seed++)
            Assert.DoesNotContain(NestedEptGen.Build(seed, size: 50, new NestedEptGenOptions()).AllOps,
                op => op is NestedEptOp.SetL2Paging or NestedEptOp.L2GvaAccess);
    }

    [Fact]
    public void An_L2_case_reads_back_from_JSON_and_a_short_PDPTE_list_is_refused_with_its_path()
    {
        var c = NestedEptGen.Build(11, size: 30, L2);
        string json = CaseJson.ToJson(c);
        Assert.Equal(c, CaseJson.Parse(json));
        var node = JsonNode.Parse(json)!;
        var setup = node["setup"]!.AsArray();
        var paging = setup.First(o => (string?)o!["op"] == "set_l2_paging" && o!["controls"] is not null)!;
        paging["pdptes"]!.AsArray().RemoveAt(0);
        var e = Assert.Throws<InputException>(() => CaseJson.Parse(node.ToJsonString()));
        Assert.Contains(".pdptes: expected four PDPTE fields, got 3", e.Message);
    }

    [Fact]
    public void Oracle_2_allows_a_gva_translation_the_tables_gave_and_refuses_another()
    {
        var state = MmuSpec.Tests.Spec.NestedL2StateTests.Vm();
        var layer = EptTlb.Start(state.Caps, state.L1Memory, state.Eptp!.Value);
        var access = Access.Read(0x5123);
        Assert.StartsWith("allowed", NestedEptL2Oracle.Judge(layer, state.L2Cpu!, access, new NestedEptResult.Translated(0x15123, 0x15123, 0x1015123)));
        Assert.StartsWith("not allowed", NestedEptL2Oracle.Judge(layer, state.L2Cpu!, access, new NestedEptResult.Translated(0x16123, 0x16123, 0x1016123)));
        Assert.StartsWith("not allowed", NestedEptL2Oracle.Judge(layer, state.L2Cpu!, access,
            new NestedEptResult.GuestFault(new WalkResult.PageFault(PageFaultErrorCode.Write))));
    }

    [Fact]
    public void Generated_L2_cases_agree_and_free_every_native_page()
    {
        var pool = new NativePagePool();
        for (int seed = 0; seed < 20; seed++)
        {
            var c = NestedEptGen.Build(seed, size: 40, L2);
            Assert.True(Families.NestedEpt.Run(c).Agreed, $"seed {seed}");
            using (var engine = new ImplNestedEngine(c.Config, pool))
                foreach (var op in c.AllOps) engine.Step(op);
            Assert.Equal(0, pool.PagesInUse);
        }
    }
}
