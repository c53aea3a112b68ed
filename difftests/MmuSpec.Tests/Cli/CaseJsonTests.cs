using System.Text.Json;
using System.Text.Json.Nodes;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Cases as JSON (docs/counterexample-format.md): every property's generated cases and hand-made
/// cases with every op kind read back equal to what was written; the reader is strict and names the
/// JSON path of what it refuses.
/// </summary>
public sealed class CaseJsonTests
{
    const int CasesPerProperty = 20;

    public static TheoryData<string> Properties() => [.. DiffProperties.All.Select(p => p.Name)];

    [Theory]
    [MemberData(nameof(Properties))]
    public void Every_generated_case_reads_back_equal_and_holds_the_same(string name)
    {
        var p = DiffProperties.Find(name);
        var cases = CaseSamples.Draw(p, CasesPerProperty);
        Assert.Equal(CasesPerProperty, cases.Count);
        foreach (var c in cases)
        {
            string json = CaseJson.ToJson(c);
            var back = CaseJson.Parse(json);
            Assert.Equal(c.GetType(), back.GetType());
            Assert.True(c.Equals(back), $"{name}: the case read back differs from the one written:\n{json}");
            Assert.Equal(json, CaseJson.ToJson(back));
            Assert.Equal(p.Holds(c), p.Holds(back));

            // The same through a whole counterexample file (built directly: Create would run the case a third time).
            var x = new Counterexample(p, p.Law, c, p.OpCount(c), "1,3,5", 7, 2, BuildVersions.Current, DateTimeOffset.UtcNow, null, null);
            var file = CounterexampleFile.Parse(CounterexampleFile.ToJson(x));
            Assert.True(c.Equals(file.Case), $"{name}: the case read back from a counterexample file differs");
            Assert.Same(p, file.Property);
        }
    }

    [Theory]
    [MemberData(nameof(Properties))]
    public void Every_generated_case_obeys_the_case_rules_up_to_the_deep_size(string name)
    {
        // The reader refuses what CaseRules refuses: no case a run can draw (sizes up to the deep tier's 300) may be among it.
        var p = DiffProperties.Find(name);
        foreach (var c in p.Sample(seed: 16, count: 60, endSize: PropertyCheck.MaxReplaySize)) CaseRules.Check(c, "");
    }

    [Fact]
    public void Hand_made_cases_with_every_op_kind_read_back_equal()
    {
        foreach (object c in new object[] { CaseSamples.EveryWalkOp(), CaseSamples.EveryTdpOp(), CaseSamples.EveryShadowOp() })
        {
            string json = CaseJson.ToJson(c);
            Assert.True(c.Equals(CaseJson.Parse(json)), $"read back differs:\n{json}");
        }
    }

    [Fact]
    public void The_samples_and_hand_made_cases_use_every_op_kind_of_every_family()
    {
        // If an op kind is added to the spec, this fails until the JSON form (and these cases) know it.
        var seen = new HashSet<Type>();
        foreach (var p in DiffProperties.All)
            foreach (var c in CaseSamples.Draw(p, CasesPerProperty)) seen.UnionWith(CaseSamples.OpTypes(c));
        foreach (object c in new object[] { CaseSamples.EveryWalkOp(), CaseSamples.EveryTdpOp(), CaseSamples.EveryShadowOp() })
            seen.UnionWith(CaseSamples.OpTypes(c));
        foreach (var kinds in new[] { CaseSamples.OpKinds<Op>(), CaseSamples.OpKinds<TdpOp>(), CaseSamples.OpKinds<ShadowOp>(), CaseSamples.OpKinds<MmuSpec.Spec.Ept.NestedEptOp>() })
        {
            Assert.NotEmpty(kinds);
            var missing = kinds.Except(seen).Select(t => t.FullName).ToList();
            Assert.True(missing.Count == 0, $"op kinds never serialized: {string.Join(", ", missing)}");
        }
    }

    [Fact]
    public void Each_op_carries_its_text_and_the_reader_ignores_it()
    {
        var c = CaseSamples.EveryTdpOp();
        var node = JsonNode.Parse(CaseJson.ToJson(c))!;
        var ops = node["ops"]!.AsArray();
        for (int i = 0; i < c.Ops.Length; i++) Assert.Equal(c.Ops[i].ToString(), (string?)ops[i]!["text"]);

        // Stale or missing text changes nothing: the structured fields decide.
        ops[0]!["text"] = "delete everything";
        ops[1]!.AsObject().Remove("text");
        Assert.True(c.Equals(CaseJson.Parse(node.ToJsonString())));
    }

    [Fact]
    public void Addresses_and_values_are_hex_strings_and_small_counts_are_numbers()
    {
        var node = JsonNode.Parse(CaseJson.ToJson(CaseSamples.EveryShadowOp()))!;
        var slot = node["setup"]![0]!;
        Assert.Equal("0x5000", (string?)slot["host_pfn_base"]);
        Assert.Equal(JsonValueKind.Number, slot["id"]!.GetValueKind());
        var store = node["setup"]![1]!;
        Assert.Equal("0x1000", (string?)store["gpa"]);
        Assert.Equal("0x2003", (string?)store["value"]);
        Assert.Equal(8, (int)store["size"]!);
        Assert.Equal("0x8000000000001002", (string?)node["ops"]![1]!["cr3"]);
        Assert.Equal("upstream", (string?)node["config"]!["root_policy"]);
    }

    [Fact]
    public void The_shadow_prefetch_switch_round_trips_and_a_file_without_it_reads_as_off()
    {
        var sample = CaseSamples.EveryShadowOp();
        var on = sample with { Config = sample.Config.WithPrefetch(true) };
        var node = JsonNode.Parse(CaseJson.ToJson(on))!;
        Assert.True((bool)node["config"]!["prefetch"]!);
        Assert.True(CaseJson.Parse(node.ToJsonString()).Equals(on));
        node["config"]!.AsObject().Remove("prefetch");
        var old = (ShadowCase)CaseJson.Parse(node.ToJsonString());
        Assert.False(old.Config.Prefetch);
        Assert.Equal(on.Config.WithPrefetch(false), old.Config);
    }

    public static TheoryData<string, string, string> Refusals() => new()
    {
        // kind, mutation (path = new JSON value, or path with a trailing '-' to remove), expected message
        { "tdp", "ops[2].gpa_extra=1", "unknown field 'ops[2].gpa_extra'" },
        { "tdp", "ops[3].new_base_gfn-", "ops[3].new_base_gfn is missing" },
        { "tdp", "ops[3].new_base_gfn=1024", "ops[3].new_base_gfn: expected a hex string like \"0x1000\", got the number 1024" },
        { "tdp", "ops[3].new_base_gfn=\"0xzz\"", "ops[3].new_base_gfn: '0xzz' is not a number" },
        { "tdp", "ops[0].id=\"3\"", "ops[0].id: expected an integer, got the string \"3\"" },
        { "tdp", "ops[0].read_only=1", "ops[0].read_only: expected true or false, got the number 1" },
        { "tdp", "ops[0].host_page_size=\"8K\"", "ops[0].host_page_size: unknown value '8K' (expected 4K, 2M, 4M, 1G)" },
        { "tdp", "ops[4].op=\"zap_some\"", "ops[4].op: unknown TDP op kind 'zap_some'" },
        { "tdp", "ops[4].op-", "ops[4].op is missing" },
        { "tdp", "ops[6]=3", "ops[6]: expected an operation object" },
        { "tdp", "config.shared_bit=48", "config.shared_bit: the shared bit is 47 or 51 (or none)" },
        { "tdp", "config.format=\"npt\"", "config.format: unknown value 'npt' (expected ept, stage2)" },
        { "tdp", "ops=null", "ops: expected an array, got null" },
        { "tdp", "kind=\"walk\"", "unknown field 'config'" },
        { "tdp", "kind=\"mmu\"", "kind: unknown case kind 'mmu' (expected walk, tdp, shadow, tdp-concurrent, nested-ept)" },
        { "tdp", "kind-", "kind is missing" },
        { "tdp", "ops[12].access.privilege=\"kernel\"", "ops[12].access.privilege: unknown value 'kernel' (expected supervisor, user, implicit-supervisor)" },
        { "tdp", "ops[11].controls.mode=\"long9\"", "ops[11].controls.mode: unknown value 'long9'" },
        { "tdp", "ops[11].controls.smep-", "ops[11].controls.smep is missing" },
        { "tdp", "ops[11].controls.maxphyaddr=60", "ops[11].controls.maxphyaddr: MAXPHYADDR must be between 36 and 52" },
        { "tdp", "ops[11].controls.pkru=\"0x100000000\"", "ops[11].controls.pkru: 0x100000000 does not fit PKRU's 32 bits" },
        { "walk", "ops[0].access.privilege=\"implicit-supervisor\"", "ops[0].access: an instruction fetch is never an implicit supervisor-mode access" },
        { "walk", "setup[0]={\"op\":\"load_cr3\",\"cr3\":\"0x1000\"}", "setup[0].op: the setup of a walk case holds only write_guest operations" },
        { "walk", "slots[1].pages=16", "slots[1].pages: expected a hex string" },
        { "walk", "ops[0].text=5", "ops[0].text: expected a string, got the number 5" },
        { "shadow", "config.maxphyaddr=30", "config.maxphyaddr: MAXPHYADDR must be between 36 and 52" },
        { "shadow", "config.root_policy=\"keep\"", "config.root_policy: unknown value 'keep' (expected keep-and-resync, upstream)" },
        { "shadow", "setup[3].pcide-", "setup[3].pcide is missing" },
        { "shadow", "ops[5].op=\"invlpga\"", "ops[5].op: unknown shadow op kind 'invlpga'" },
        // Numbers too wide for their field.
        { "tdp", "ops[3].new_base_gfn=\"0x1_0000_0000_0000_0000\"", "ops[3].new_base_gfn: '0x1_0000_0000_0000_0000' is larger than 64 bits" },
        { "tdp", "ops[3].new_base_gfn=\"18446744073709551616\"", "ops[3].new_base_gfn: '18446744073709551616' is larger than 64 bits" },
        { "tdp", "ops[0].id=3000000000", "ops[0].id: 3000000000 does not fit 32 bits" },
        // CaseRules: what every generated case obeys (one row per rule).
        { "walk", "slots[1].base_gfn=\"0xfffffffffffffff8\"", "slots[1]: 0x10 pages from gfn 0xfffffffffffffff8 run past the 64-bit guest-physical address space (gfn 0x10000000000000)" },
        { "walk", "slots[1].base_gfn=\"0xffffffffffff8\"", "slots[1]: 0x10 pages from gfn 0xffffffffffff8 run past the 64-bit guest-physical address space" },
        { "walk", "slots[0].pages=\"0x0\"", "slots[0].pages: a memslot has at least one page" },
        { "walk", "slots[1].base_gfn=\"0x3f\"", "slots[1]: overlaps slots[0]" },
        { "walk", "slots[1].pages=\"0x10000\"", "slots: more than 0x10000 pages (256 MiB) in all" },
        { "walk", "setup[0].size=3", "setup[0].size: a guest write is 4 or 8 bytes (a page-table entry), not 3" },
        { "walk", "setup[0].gpa=\"0x1024\"", "setup[0].gpa: 0x1024 is not 8-byte aligned" },
        { "walk", "ops[1].gpa=\"0x2002\"", "ops[1].gpa: 0x2002 is not 4-byte aligned" },
        { "walk", "ops[1].value=\"0x100000000\"", "ops[1].value: 0x100000000 does not fit a 4-byte write" },
        { "walk", "cr3=\"0x100001000\"", "cr3: 0x100001000 is wider than CR3's 32 bits in pae paging" },
        { "walk", "ops[2].controls.mode=\"bits32\"", "ops[3].cr3: 0x8000000000001000 is wider than CR3's 32 bits in bits32 paging" },
        { "walk", "ops[0].access.gva=\"0x100000000\"", "ops[0].access.gva: 0x100000000 is wider than a linear address's 32 bits in pae paging" },
        { "tdp", "ops[1].pages=\"0x100001\"", "ops[1].pages: 0x100001 pages is more than a memslot may have here (0x100000, 4 GiB)" },
        { "shadow", "setup[0].pages=\"0xffffffff\"", "setup[0].pages: 0xffffffff pages is more than a memslot may have here" },
        { "shadow", "ops[16].pages=\"0x100001\"", "ops[16].pages: 0x100001 pages is more than a memslot may have here" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void The_reader_refuses_what_it_does_not_know_naming_the_path(string kind, string mutation, string expected)
    {
        object c = kind switch { "walk" => CaseSamples.EveryWalkOp(), "tdp" => CaseSamples.EveryTdpOp(), _ => CaseSamples.EveryShadowOp() };
        var root = JsonNode.Parse(CaseJson.ToJson(c))!;
        Mutate(root, mutation);
        var e = Assert.Throws<InputException>(() => CaseJson.Parse(root.ToJsonString()));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_hand_made_cases_and_the_largest_rule_values_are_accepted_and_agree()
    {
        // The rules refuse nothing the samples need: every hand-made case reads back and replays in agreement.
        foreach (object c in new object[] { CaseSamples.EveryWalkOp(), CaseSamples.EveryTdpOp(), CaseSamples.EveryShadowOp() })
            Assert.True(CaseRuns.Trace(CaseJson.Parse(CaseJson.ToJson(c))).Agreed, $"{CaseJson.KindOf(c)}: the hand-made case diverges");
        // At the limits: a slot ending exactly at 2^52 gfns, and the largest memory and slot allowed.
        var top = CaseSamples.EveryWalkOp() with { Slots = [new(0, 0x40), new(CaseRules.GfnLimit - 0x10, 0x10)] };
        Assert.True(top.Equals(CaseJson.Parse(CaseJson.ToJson(top))));
        var most = CaseSamples.EveryWalkOp() with { Slots = [new(0, 0x40), new(0x100, CaseRules.MaxWalkPages - 0x40)] };
        Assert.True(most.Equals(CaseJson.Parse(CaseJson.ToJson(most))));
        var big = CaseSamples.EveryTdpOp();
        big = big.WithOps(big.Ops.SetItem(1, ((TdpOp.CreateSlot)big.Ops[1]) with { Pages = CaseRules.MaxSlotPages }));
        Assert.True(big.Equals(CaseJson.Parse(CaseJson.ToJson(big))));
    }

    [Fact]
    public void A_field_named_twice_is_refused_with_its_path()
    {
        string json = CaseJson.ToJson(CaseSamples.EveryTdpOp());
        // System.Text.Json would keep the last value silently; the reader refuses the document.
        string nested = new System.Text.RegularExpressions.Regex("\"new_base_gfn\": ").Replace(json, "\"new_base_gfn\": \"0x1\", \"new_base_gfn\": ", 1);
        var e = Assert.Throws<InputException>(() => CaseJson.Parse(nested));
        Assert.Equal("duplicate field 'ops[3].new_base_gfn': each field may appear once in an object", e.Message);
        string top = json.Replace("\"kind\": \"tdp\"", "\"kind\": \"tdp\", \"kind\": \"tdp\"", StringComparison.Ordinal);
        Assert.Equal("duplicate field 'kind': each field may appear once in an object", Assert.Throws<InputException>(() => CaseJson.Parse(top)).Message);
        // Scenarios go through the same reader.
        var s = Assert.Throws<InputException>(() => ScenarioJson.Parse("""{"mode":"long4","cr3":"0x1000","memory":{"0x1000":"0x3","0x1000":"0x7"}}"""));
        Assert.Equal("duplicate field 'memory.0x1000': each field may appear once in an object", s.Message);
    }

    [Fact]
    public void A_case_inside_a_document_is_named_by_its_full_path()
    {
        var root = new JsonObject { ["case"] = JsonNode.Parse(CaseJson.ToJson(CaseSamples.EveryShadowOp())) };
        root["case"]!["ops"]![2]!["pcid"] = 1;
        using var doc = JsonDocument.Parse(root.ToJsonString());
        var e = Assert.Throws<InputException>(() => CaseJson.Read(doc.RootElement.GetProperty("case"), "case"));
        Assert.StartsWith("case.ops[2].pcid: expected a hex string", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Applies "a.b[2].c=JSON" (set) or "a.b[2].c-" (remove) to <paramref name="root"/>.</summary>
    static void Mutate(JsonNode root, string mutation)
    {
        bool remove = mutation.EndsWith('-');
        int eq = mutation.IndexOf('=');
        string path = remove ? mutation[..^1] : mutation[..eq];
        var steps = new List<object>();
        foreach (var part in path.Split('.'))
        {
            int bracket = part.IndexOf('[');
            if (bracket < 0) { steps.Add(part); continue; }
            steps.Add(part[..bracket]);
            steps.Add(int.Parse(part[(bracket + 1)..^1], System.Globalization.CultureInfo.InvariantCulture));
        }
        JsonNode parent = root;
        foreach (var s in steps.SkipLast(1)) parent = s is int i ? parent[i]! : parent[(string)s]!;
        JsonNode? value = remove ? null : JsonNode.Parse(mutation[(eq + 1)..]);
        switch (steps[^1])
        {
            case int i: parent[i] = value; break;
            case string key when remove: parent.AsObject().Remove(key); break;
            case string key: parent[key] = value; break;
        }
    }
}
