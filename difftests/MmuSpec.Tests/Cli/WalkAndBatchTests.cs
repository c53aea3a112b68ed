using System.Text.Json;
using MmuSpec.Harness.Images;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>Single walks on both engines, the JSON result format, and batch mode (one JSON line in, one out).</summary>
public sealed class WalkAndBatchTests
{
    const string UserWrite = """{"mode":"long4","nxe":true,"cr3":"0x1000","memory":{"0x1000":"0x2007","0x2000":"0x3007","0x3010":"0x4007","0x4008":"0x800000000000a007"},"access":{"gva":"0x401234","type":"write","privilege":"user"}}""";
    const string UserFetch = """{"mode":"long4","nxe":true,"cr3":"0x1000","memory":{"0x1000":"0x2007","0x2000":"0x3007","0x3010":"0x4007","0x4008":"0x800000000000a007"},"access":{"gva":"0x401234","type":"fetch","privilege":"user"}}""";
    const string NonCanonical = """{"mode":"long4","cr3":"0x1000","access":{"gva":"0x800000000000"}}""";

    [Fact]
    public void A_successful_write_sets_A_everywhere_and_D_in_the_leaf_reported_once_per_entry()
    {
        var r = SpecWalk.Run(ScenarioJson.Parse(UserWrite));
        Assert.Equal(
            """{"outcome":"ok","gpa":"0xa234","page_size":"4K","rights":{"user":true,"writable":true,"nx":true,"pkey":0},"changed_entries":[{"gpa":"0x1000","before":"0x2007","after":"0x2027"},{"gpa":"0x2000","before":"0x3007","after":"0x3027"},{"gpa":"0x3010","before":"0x4007","after":"0x4027"},{"gpa":"0x4008","before":"0x800000000000a007","after":"0x800000000000a067"}],"rule":"user write to a writable user-mode address","engine":"spec","access":{"gva":"0x401234","type":"write","privilege":"user"}}""",
            WalkJson.ToJson(r, steps: false));
    }

    [Fact]
    public void The_spec_result_lists_every_step()
    {
        var r = SpecWalk.Run(ScenarioJson.Parse(UserWrite));
        using var doc = JsonDocument.Parse(WalkJson.ToJson(r, steps: true));
        var steps = doc.RootElement.GetProperty("steps");
        Assert.Equal(["PML4E", "PDPTE", "PDE", "PTE"], steps.EnumerateArray().Select(s => s.GetProperty("entry").GetString()));
        Assert.Equal("0x4008", steps[3].GetProperty("gpa").GetString());
        Assert.Equal(1, steps[3].GetProperty("index").GetInt32());
        Assert.Equal(["P", "W", "U", "XD"], steps[3].GetProperty("flags").EnumerateArray().Select(f => f.GetString()));
    }

    [Theory]
    [InlineData(UserWrite)]
    [InlineData(UserFetch)]
    [InlineData(NonCanonical)]
    [InlineData("""{"mode":"bits32","pse":true,"cr3":"0x1000","memory":{"0x1c00":"0x400083"},"access":{"gva":"0xc0012345","type":"write"}}""")]
    [InlineData("""{"mode":"pae","nxe":true,"cr3":"0x2020","memory":{"0x2020":"0x3001","0x3000":"0x4007","0x4000":"0x80000000000050a5"},"access":{"gva":"0x123","type":"read","privilege":"user"}}""")]
    public void Spec_and_impl_report_the_same_outcome_and_changed_entries(string json)
    {
        var s = ScenarioJson.Parse(json);
        var spec = SpecWalk.Run(s);
        var impl = ImplWalk.Run(s);
        Assert.Equal(spec.Result, impl.Result);
        Assert.Equal(spec.Changes.ToList(), impl.Changes.ToList());
        Assert.Null(impl.Explanation);
    }

    [Fact]
    public void Batch_writes_one_result_per_line_and_an_error_object_for_a_bad_line()
    {
        string input = string.Join('\n', UserFetch, "", "# a comment line", """{"mode":"long9","cr3":"0x1000","access":{"gva":"0x0"}}""", NonCanonical, """{"mode":"long4","cr3":"0x1000"}""");
        var output = new StringWriter();
        int failed = BatchWalk.Run(new StringReader(input), output, SpecWalk.Run);

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, failed);
        Assert.Equal(4, lines.Length);
        Assert.Equal("""{"outcome":"page_fault","error_code":"0x15","error_bits":["P","U","I/D"],"changed_entries":[],"rule":"fetch from an execute-disabled address (XD=1 at some level)","engine":"spec","access":{"gva":"0x401234","type":"fetch","privilege":"user"}}""", lines[0]);
        Assert.Equal("""{"error":"line 4: mode: unknown paging mode 'long9' (expected bits32, pae, long4 or long5)"}""", lines[1]);
        Assert.Equal("""{"outcome":"gp","gp_reason":"non_canonical","changed_entries":[],"rule":"bits 63:47 are not all equal: a non-canonical address is #GP, never #PF (SDM §3.3.7.1)","engine":"spec","access":{"gva":"0x800000000000","type":"read","privilege":"supervisor"}}""", lines[2]);
        Assert.Equal("""{"error":"line 6: access is missing: each batch line walks one access"}""", lines[3]);
    }

    [Fact]
    public void Batch_on_the_impl_matches_the_spec_field_for_field_except_the_rule()
    {
        string input = string.Join('\n', UserWrite, UserFetch, NonCanonical);
        var spec = new StringWriter();
        var impl = new StringWriter();
        Assert.Equal(0, BatchWalk.Run(new StringReader(input), spec, SpecWalk.Run));
        Assert.Equal(0, BatchWalk.Run(new StringReader(input), impl, ImplWalk.Run));
        static string WithoutRuleAndEngine(string line)
        {
            var o = System.Text.Json.Nodes.JsonNode.Parse(line)!.AsObject();
            o.Remove("rule");
            o.Remove("engine");
            return o.ToJsonString();
        }
        Assert.Equal(spec.ToString().Split('\n').Select(l => l.Length == 0 ? l : WithoutRuleAndEngine(l)),
                     impl.ToString().Split('\n').Select(l => l.Length == 0 ? l : WithoutRuleAndEngine(l)));
    }

    [Fact]
    public void Every_documented_example_scenario_walks_and_both_engines_agree()
    {
        var examples = Directory.GetFiles(Path.Combine(RepoRoot(), "docs", "examples"), "*.json");
        Assert.NotEmpty(examples);
        foreach (var file in examples)
        {
            var s = ScenarioJson.Parse(File.ReadAllText(file));
            var spec = SpecWalk.Run(s);
            var impl = ImplWalk.Run(s);
            Assert.True(spec.Result == impl.Result, $"{file}: spec {spec.Result} / impl {impl.Result}");
            Assert.Equal(spec.Changes.ToList(), impl.Changes.ToList());
        }
        var jsonl = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "examples", "batch.jsonl"));
        var output = new StringWriter();
        Assert.Equal(1, BatchWalk.Run(new StringReader(jsonl), output, SpecWalk.Run));   // line 4 is the documented bad line
    }

    internal static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MmuSpec.sln"))) return dir.FullName;
        throw new InvalidOperationException("MmuSpec.sln not found above the test binaries");
    }
}
