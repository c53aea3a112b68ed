using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MmuSpec.Harness.Images;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// <c>mmuspec walk</c> of an L2 access under L1's EPT: a scenario's "ept" object or <c>--eptp</c> with an image, the
/// 2D walk in JSON and text, and bad input. The scenario is docs/examples/nested/l2-long4-ept.json: L2's tables in an EPT
/// 2M identity page, L2 gpa 0x200000 at L1 gpa 0x40000 (RW, not executable), EPT A/D on.
/// </summary>
public sealed partial class WalkL2Tests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("wt-walk-l2-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    static string ExamplePath => Path.Combine(WalkAndBatchTests.RepoRoot(), "docs", "examples", "nested", "l2-long4-ept.json");
    static string Example => File.ReadAllText(ExamplePath);

    /// <summary>The example with some of its fields replaced (a JSON path of object keys, '/' between them).</summary>
    static string Edited(params (string Path, JsonNode? Value)[] edits)
    {
        var root = JsonNode.Parse(Example, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip })!;
        foreach (var (path, value) in edits)
        {
            var keys = path.Split('/');
            var parent = keys[..^1].Aggregate(root, (n, k) => n[k]!);
            if (value is null) parent.AsObject().Remove(keys[^1]); else parent[keys[^1]] = value;
        }
        return root.ToJsonString();
    }

    static JsonElement Walk(string scenario)
    {
        var report = NestedSpecWalk.Run(ScenarioJson.Parse(scenario));
        return JsonDocument.Parse(NestedWalkJson.ToJson(report)).RootElement;
    }

    static List<string?> Strings(JsonElement array, string field) => array.EnumerateArray().Select(e => e.GetProperty(field).GetString()).ToList();

    [Fact]
    public void An_L2_write_goes_through_both_dimensions_and_sets_A_D_in_L2s_tables_and_in_the_EPT()
    {
        var r = Walk(Example);
        Assert.Equal("ok", r.GetProperty("outcome").GetString());
        Assert.Equal("0x200234", r.GetProperty("l2_gpa").GetString());
        Assert.Equal("0x40234", r.GetProperty("l1_gpa").GetString());
        Assert.Equal("4K", r.GetProperty("page_size").GetString());
        Assert.Equal("RW-", r.GetProperty("ept_rights").GetString());
        Assert.Equal(["PML4E", "PDPTE", "PDE", "PTE"], Strings(r.GetProperty("l2_steps"), "entry"));
        // Each L2 entry read is an EPT walk, then the final access, then one EPT write per L2 A/D update.
        Assert.Equal(["l2_entry_read", "l2_entry_read", "l2_entry_read", "l2_entry_read", "final_access",
                      "l2_ad_update", "l2_ad_update", "l2_ad_update", "l2_ad_update", "l2_ad_update"],
            Strings(r.GetProperty("ept_walks"), "purpose"));
        Assert.Equal(["0x1000", "0x2000", "0x3010", "0x4008", "0x200234"], Strings(r.GetProperty("ept_walks"), "l2_gpa").Take(5));
        var final = r.GetProperty("ept_walks")[4].GetProperty("steps");
        Assert.Equal(["PML4E", "PDPTE", "PDE", "PTE"], Strings(final, "entry"));
        Assert.Equal(["R", "W"], final[3].GetProperty("flags").EnumerateArray().Select(f => f.GetString()));
        // L2's A then D on its leaf, reported once; the EPT's A on every entry used and D on the leaves written.
        Assert.Equal([("0x1000", "0x2027"), ("0x2000", "0x3027"), ("0x3010", "0x4027"), ("0x4008", "0x200067")],
            r.GetProperty("changed_l2_entries").EnumerateArray().Select(c => (c.GetProperty("l1_gpa").GetString(), c.GetProperty("after").GetString())));
        Assert.Equal([("0x10000", "0x11107"), ("0x11000", "0x12107"), ("0x12000", "0x3b7"), ("0x12008", "0x13107"), ("0x13000", "0x40333")],
            r.GetProperty("changed_ept_entries").EnumerateArray().Select(c => (c.GetProperty("l1_gpa").GetString(), c.GetProperty("after").GetString())));
    }

    [Fact]
    public void A_fetch_from_a_page_the_EPT_leaves_unexecutable_is_a_violation_of_the_final_access_with_its_exit_qualification()
    {
        var r = Walk(Edited(("access/type", "fetch")));
        Assert.Equal("ept_violation", r.GetProperty("outcome").GetString());
        Assert.Equal("0x200234", r.GetProperty("gpa").GetString());
        Assert.Equal("0x401234", r.GetProperty("gla").GetString());
        // fetch (2), R and W allowed (3, 4), gla valid (7), the translation's access (8).
        Assert.Equal("0x19c", r.GetProperty("exit_qualification").GetString());
        Assert.StartsWith("the final access: ", r.GetProperty("rule").GetString(), StringComparison.Ordinal);
        Assert.Empty(r.GetProperty("changed_l2_entries").EnumerateArray());
    }

    [Fact]
    public void An_EPT_violation_on_reading_L2s_top_table_names_the_paging_structure_access()
    {
        var r = Walk(Edited(("memory/0x12000", "0x0")));
        Assert.Equal("ept_violation", r.GetProperty("outcome").GetString());
        Assert.Equal("0x1000", r.GetProperty("gpa").GetString());
        ulong q = Convert.ToUInt64(r.GetProperty("exit_qualification").GetString(), 16);
        Assert.True((q & 0x80) != 0 && (q & 0x100) == 0, $"bit 7 set, bit 8 clear: {q:x}");
        Assert.Equal(["l2_entry_read"], Strings(r.GetProperty("ept_walks"), "purpose"));
        Assert.StartsWith("reading the L2 PML4E at L2 gpa 0x1000", r.GetProperty("rule").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public void A_write_without_read_EPT_leaf_is_a_misconfiguration_at_level_1()
    {
        var r = Walk(Edited(("memory/0x13000", "0x40032")));
        Assert.Equal("ept_misconfiguration", r.GetProperty("outcome").GetString());
        Assert.Equal("write_without_read", r.GetProperty("misconfiguration").GetString());
        Assert.Equal(1, r.GetProperty("level").GetInt32());
        Assert.Equal("0x200234", r.GetProperty("gpa").GetString());
    }

    [Fact]
    public void An_L2_page_fault_is_L2s_and_no_VM_exit()
    {
        var r = Walk(Edited(("memory/0x4008", "0x200005")));   // R/W clear; CR0.WP makes the supervisor write fault
        Assert.Equal("ok", r.GetProperty("outcome").GetString());
        r = Walk(Edited(("memory/0x4008", "0x200005"), ("wp", true)));
        Assert.Equal("page_fault", r.GetProperty("outcome").GetString());
        Assert.Equal(["P", "W"], r.GetProperty("error_bits").EnumerateArray().Select(b => b.GetString()));
    }

    /// <summary>PAE: the PDPTEs are loaded through the EPT. L1's own page at the L2 PDPT's gpa holds a PDPTE with reserved bits, which a load from L1 memory would #GP on.</summary>
    const string PaeUnderEpt = """
        {"mode":"pae","cr3":"0x2020",
         "memory":{"0x2020":"0x1e1","0x50020":"0x3001","0x60000":"0x83",
                   "0x10000":"0x11007","0x11000":"0x12007","0x12000":"0x13007",
                   "0x13010":"0x50037","0x13018":"0x60037","0x13000":"0x70037"},
         "ept":{"eptp":"0x1001e"},
         "access":{"gva":"0x123"}}
        """;

    [Fact]
    public void A_PAE_L2_loads_its_PDPTEs_through_the_EPT()
    {
        var r = Walk(PaeUnderEpt);
        Assert.Equal("ok", r.GetProperty("outcome").GetString());
        Assert.Equal("0x123", r.GetProperty("l2_gpa").GetString());
        Assert.Equal("0x70123", r.GetProperty("l1_gpa").GetString());
        var steps = r.GetProperty("l2_steps");
        Assert.Equal(JsonValueKind.Null, steps[0].GetProperty("l2_gpa").ValueKind);   // the PDPTE register
        Assert.Equal("0x3001", steps[0].GetProperty("raw").GetString());
        Assert.Equal(["l2_entry_read", "final_access", "l2_ad_update"], Strings(r.GetProperty("ept_walks"), "purpose"));
    }

    [Fact]
    public void A_PAE_L2_whose_PDPT_the_EPT_does_not_map_cannot_load_CR3()
    {
        var e = Assert.Throws<InputException>(() => Walk(PaeUnderEpt.Replace("\"0x13010\":\"0x50037\",", "", StringComparison.Ordinal)));
        Assert.Contains("loading the PDPTEs at L2 gpa 0x2020 would be a VM exit to L1: EPT violation", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_cli_explains_an_L2_walk_in_text_and_json()
    {
        var text = MmuspecProcess.Run("walk", "--scenario", ExamplePath);
        Assert.True(text.ExitCode == 0, text.Stderr);
        Assert.Contains("ept      EPTP 0x1005e (4-level, root 0x10000, A/D)", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("  L2 PTE   @ 0x4008: 0x200007", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("        EPT PTE   @ 0x13000: 0x40033", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("result   translated to L2 gpa 0x200234 (4K page, UW X), then translated to L1 gpa 0x40234", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("L2 A/D   L1 gpa 0x4008: 0x200007 -> 0x200067", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("EPT A/D  L1 gpa 0x13000: 0x40033 -> 0x40333", text.Stdout, StringComparison.Ordinal);

        var json = MmuspecProcess.Run("walk", "--scenario", ExamplePath, "--access", "fetch", "--json");
        Assert.True(json.ExitCode == 0, json.Stderr);
        Assert.Equal("0x19c", JsonDocument.Parse(json.Stdout).RootElement.GetProperty("exit_qualification").GetString());
    }

    [Fact]
    public void An_image_with_an_EPTP_on_the_command_line_walks_as_the_scenario_does()
    {
        var image = new byte[0x80000];
        using (var doc = JsonDocument.Parse(Example))
            foreach (var w in doc.RootElement.GetProperty("memory").EnumerateObject())
                BitConverter.GetBytes(Convert.ToUInt64(w.Value.GetString(), 16)).CopyTo(image, (int)Convert.ToUInt64(w.Name, 16));
        string file = Path.Combine(dir, "l1.img");
        File.WriteAllBytes(file, image);

        var fromImage = MmuspecProcess.Run("walk", "--image", file, "--cr3", "1000", "--mode", "long4", "--eptp", "1005e", "--gva", "401234", "--access", "write", "--json");
        var fromScenario = MmuspecProcess.Run("walk", "--scenario", ExamplePath, "--json");
        Assert.True(fromImage.ExitCode == 0, fromImage.Stderr);
        Assert.Equal(fromScenario.Stdout, fromImage.Stdout);
        Assert.Equal(image, File.ReadAllBytes(file));   // mapped read-only: the A/D bits are the walk's, not the file's
    }

    public static TheoryData<string, string, string> BadRows() => new()
    {
        // command line ('|' between arguments), the scenario in l2.json, expected message fragment
        { "walk|--image|l1.img|--cr3|1000|--mode|long4|--eptp|1005f|--gva|0", "", "--eptp 0x1005f: VM entry would fail: the paging-structure memory type" },
        { "walk|--image|l1.img|--cr3|1000|--mode|long4|--maxphyaddr|52|--eptp|1001e|--gva|0", "", "a 4-level EPT translates 48-bit guest-physical addresses, narrower than L2's MAXPHYADDR 52" },
        { "walk|--scenario|l2.json|--eptp|1005e", "{}", "--eptp cannot be combined with --scenario" },
        { "walk|--scenario|l2.json|--engine|impl", "{}", "--engine impl: the impl has no nested EPT walk yet" },
        { "mappings|--scenario|l2.json", "{}", "this is L2's address space under L1's EPT" },
        { "walk|--scenario|l2.json", """{"ept/eptpp": "0x1005e", "ept/eptp": null}""", "unknown field 'ept.eptpp'" },
        { "walk|--scenario|l2.json", """{"ept/eptp": null}""", "ept.eptp is missing" },
        { "walk|--scenario|l2.json", """{"ept": "0x1005e"}""", "ept: expected an object" },
        { "walk|--scenario|l2.json", """{"ept/mbec": 1}""", "ept.mbec: expected true or false" },
        { "walk|--scenario|l2.json", """{"ept/eptp": "0x10026", "ept/five_level": false}""", "ept.eptp 0x10026: VM entry would fail: the page-walk length" },
        { "walk|--scenario|l2.json", """{"ept/eptp": "0x1005e", "ept/accessed_dirty": false}""", "bit 6 enables EPT accessed/dirty flags, which are not supported" },
    };

    /// <summary>Bad input, as <see cref="BadInputTests"/> checks it: one line, exit 2, nothing written. The scenario column lists edits of the example.</summary>
    [Theory]
    [MemberData(nameof(BadRows))]
    public void Bad_L2_input_is_one_line_exit_2_and_writes_nothing(string argv, string edits, string expected)
    {
        var changes = edits.Length == 0 ? Array.Empty<(string, JsonNode?)>() : JsonNode.Parse(edits)!.AsObject().Select(p => (p.Key, p.Value?.DeepClone())).ToArray();
        File.WriteAllText(Path.Combine(dir, "l2.json"), Edited(changes));
        File.WriteAllBytes(Path.Combine(dir, "l1.img"), new byte[0x20000]);
        var before = Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order().ToList();

        var (exit, stdout, stderr) = MmuspecProcess.Run(argv.Split('|'), dir);

        Assert.True(exit == 2, $"exit {exit}, expected 2\nstdout: {stdout}\nstderr: {stderr}");
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => !l.StartsWith("mmuspec: note: ", StringComparison.Ordinal));
        Assert.StartsWith("mmuspec: error: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
        Assert.Equal(before, Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order().ToList());
    }

    [Fact]
    public void A_batch_line_with_an_EPT_is_an_error_result_not_an_L1_walk()
    {
        var output = new StringWriter();
        int failed = BatchWalk.Run(new StringReader(Edited()), output, SpecWalk.Run);
        Assert.Equal(1, failed);
        Assert.Contains("this is L2's address space under L1's EPT", output.ToString(), StringComparison.Ordinal);
        Assert.Throws<InputException>(() => ImplWalk.Run(ScenarioJson.Parse(Example)));
    }

    [GeneratedRegex("```json nested-scenario\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex NestedScenarioBlock();

    [Fact]
    public void Every_L2_scenario_in_the_json_format_doc_and_in_docs_examples_nested_walks()
    {
        string doc = File.ReadAllText(Path.Combine(WalkAndBatchTests.RepoRoot(), "docs", "json-format.md"));
        var blocks = NestedScenarioBlock().Matches(doc).Select(m => m.Groups[1].Value).ToList();
        Assert.NotEmpty(blocks);
        var files = Directory.GetFiles(Path.GetDirectoryName(ExamplePath)!, "*.json").Select(File.ReadAllText).ToList();
        Assert.NotEmpty(files);
        foreach (var json in blocks.Concat(files))
        {
            var s = ScenarioJson.Parse(json);
            Assert.NotNull(s.Ept);
            Assert.NotNull(NestedSpecWalk.Run(s).Explanation.Rule);
        }
    }
}
