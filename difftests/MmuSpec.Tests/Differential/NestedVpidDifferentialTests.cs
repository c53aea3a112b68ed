using System.Text.Json.Nodes;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Nested;
using MmuSpec.Harness.Running;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The `nested-ept-vpid` generator's and JSON's contracts (the property itself runs in NestedEptDifferentialTests): setups
/// accepted with the gva TLB on, every new op kind drawn, none of them behind the other nested properties' options, a case
/// read back from JSON, and oracle 2 refusing a stale translation the layer forbids.
/// </summary>
public sealed class NestedVpidDifferentialTests
{
    static readonly NestedEptGenOptions Vpid = new(Vpid: true);

    [Fact]
    public void Generated_setups_are_accepted_and_the_ops_draw_every_INVVPID_type_VM_entries_with_and_without_VPID_and_VMFUNC()
    {
        var drawn = new HashSet<string>();
        for (int seed = 0; seed < 40; seed++)
        {
            var c = NestedEptGen.Build(seed, size: 50, Vpid);
            Assert.True(c.Config.GvaTlb);
            var state = NestedEptState.Create(c.Config.Caps);
            foreach (var op in c.Setup)
            {
                VmResult r;
                (state, r) = state.Step(op);
                Assert.True(r is VmResult.Ok, $"seed {seed}: setup op {op} gave {r}");
            }
            Assert.True(state.Vpid.InL2);
            foreach (var op in c.Ops)
                drawn.Add(op switch
                {
                    NestedEptOp.Invvpid i => $"INVVPID {i.Type}",
                    NestedEptOp.VmEntry e => $"entry {e.VpidEnabled} {e.EptpList is not null}",
                    _ => op.GetType().Name,
                });
        }
        Assert.Superset(new HashSet<string> { "INVVPID IndividualAddress", "INVVPID SingleContext", "INVVPID AllContexts", "INVVPID SingleContextRetainingGlobals",
            "entry True True", "entry True False", "entry False True", "entry False False", "VmExit", "Vmfunc", "L2GvaAccess", "L1Store", "Invept" }, drawn);
    }

    [Fact]
    public void The_other_nested_properties_draw_no_VPID_op_and_keep_the_gva_TLB_off()
    {
        foreach (var options in new NestedEptGenOptions[] { new(), new(L2Paging: true), new(Unsync: true, StaleBursts: true) })
            for (int seed = 0; seed < 40; seed++)
            {
                var c = NestedEptGen.Build(seed, size: 50, options);
                Assert.False(c.Config.GvaTlb || c.Config.L2GlobalPages);
                Assert.DoesNotContain(c.AllOps, op => op is NestedEptOp.VmExit or NestedEptOp.VmEntry or NestedEptOp.Invvpid or NestedEptOp.Vmfunc);
            }
    }

    [Fact]
    public void A_VPID_case_reads_back_from_JSON_and_a_VPID_out_of_range_is_refused_with_its_path()
    {
        var c = Enumerable.Range(0, 20).Select(seed => NestedEptGen.Build(seed, size: 40, Vpid)).First(c => c.Ops.Any(op => op is NestedEptOp.Invvpid));
        string json = CaseJson.ToJson(c);
        Assert.Equal(c, CaseJson.Parse(json));
        var node = JsonNode.Parse(json)!;
        Assert.True((bool)node["config"]!["gva_tlb"]!);
        int at = c.Ops.IndexOf(c.Ops.First(op => op is NestedEptOp.Invvpid));
        node["ops"]![at]!["vpid"] = 70000;
        var e = Assert.Throws<InputException>(() => CaseJson.Parse(node.ToJsonString()));
        Assert.Contains($"ops[{at}].vpid: expected a VPID 0..65535", e.Message, StringComparison.Ordinal);
    }

    /// <summary>NestedL2StateTests' layout with the impl's gva TLB: L2 reads gva 0x5123, exits, L1 retargets its PTE, L2 is entered and reads again.</summary>
    static NestedEptCase StaleRead(bool vpid)
    {
        var layout = MmuSpec.Tests.Spec.NestedL2StateTests.Vm();
        var setup = new List<NestedEptOp> { new NestedEptOp.CreateSlot(0, 0, 0x40, 0x1000) };
        foreach (var gpa in new ulong[] { 0x1000, 0x2000, 0x3000, 0x4080, 0x4088, 0x4090, 0x4098, 0x40A8, 0x10000, 0x11000, 0x12000, 0x13028 })
            setup.Add(new NestedEptOp.L1Store(gpa, layout.L1Memory.Read64(gpa)!.Value, 8));
        setup.Add(new NestedEptOp.LoadEptp(layout.Eptp!.Value));
        setup.Add(new NestedEptOp.SetL2Paging(layout.L2Cpu));
        var read = new NestedEptOp.L2GvaAccess(MmuSpec.Spec.Paging.Access.Read(0x5123));
        NestedEptOp[] ops = [new NestedEptOp.VmExit(), new NestedEptOp.VmEntry(vpid, vpid ? (ushort)1 : (ushort)0, null), read,
            new NestedEptOp.VmExit(), new NestedEptOp.L1Store(0x13028, 0x16007, 8), new NestedEptOp.VmEntry(vpid, vpid ? (ushort)1 : (ushort)0, null), read];
        return new NestedEptCase(new NestedEptConfig(46, true, MmuSpec.Impl.Nested.NestedRootPolicy.KeepAndResync, GvaTlb: true), [.. setup], [.. ops]);
    }

    [Fact]
    public void With_VPID_the_impl_serves_the_stale_translation_and_oracle_2_allows_it_without_VPID_it_walks()
    {
        foreach (bool vpid in new[] { true, false })
        {
            var c = StaleRead(vpid);
            Assert.True(new NestedEptFamily().Run(c).Agreed);
            var heard = new HashSet<string>();
            NestedEptCoverage.Classify(c, s => heard.Add(s));
            Assert.Equal(vpid, heard.Contains(NestedEptVpidCoverage.StaleCombinedUsed));
            Assert.Equal(vpid, heard.Contains(NestedEptVpidCoverage.GvaTlbHit));
            Assert.Contains(vpid ? "VM entry: with VPID" : "VM entry: without VPID", heard);
        }
    }
}
