using System.Text.Json.Nodes;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>The aging property's cases in JSON (docs/counterexample-format.md): the config's accessed_dirty and the age ops.</summary>
public sealed class AgingJsonTests
{
    [Fact]
    public void An_aging_case_round_trips_and_names_its_accessed_dirty_mode()
    {
        var c = new TdpCase(new VmConfig(TdpFormat.Ept, 47, AccessedDirty.Disabled), [new TdpOp.Age(1, 0x201), new TdpOp.TestAge(0, 0x10)]);
        string json = CaseJson.ToJson(c);
        Assert.Equal("disabled", (string?)JsonNode.Parse(json)!["config"]!["accessed_dirty"]);
        Assert.Equal(c, CaseJson.Parse(json));
    }

    [Fact]
    public void A_case_without_aging_writes_no_accessed_dirty_field_and_reads_back_untracked()
    {
        string json = CaseJson.ToJson(new TdpCase(new VmConfig(TdpFormat.Stage2), [new TdpOp.ZapAll()]));
        Assert.Null(JsonNode.Parse(json)!["config"]!["accessed_dirty"]);
        Assert.Equal(AccessedDirty.Untracked, ((TdpCase)CaseJson.Parse(json)).Config.AccessedDirty);
    }

    [Fact]
    public void An_unknown_accessed_dirty_mode_is_bad_input_naming_the_field()
    {
        var node = JsonNode.Parse(CaseJson.ToJson(new TdpCase(new VmConfig(TdpFormat.Ept, accessedDirty: AccessedDirty.Enabled), [])))!;
        node["config"]!["accessed_dirty"] = "sometimes";
        var e = Assert.Throws<InputException>(() => CaseJson.Parse(node.ToJsonString()));
        Assert.Contains("accessed_dirty", e.Message);
    }
}
