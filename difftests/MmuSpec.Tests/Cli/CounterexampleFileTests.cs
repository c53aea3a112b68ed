using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Counterexample files (docs/counterexample-format.md): what a failing property writes, that it
/// reads back field for field, and that a wrong format, property or field is refused by name.
/// </summary>
public sealed partial class CounterexampleFileTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("wt-cex-tests-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [GeneratedRegex(@"^tdp-ept-\d{8}-\d{6}-[0-9a-f]{8}\.json$")]
    private static partial Regex TdpFileName();

    [Fact]
    public void A_failing_property_writes_its_shrunk_counterexample_and_the_report_names_the_file()
    {
        var p = DiffProperties.Find("tdp-ept");
        string target = Path.Combine(dir, "new", "sub");   // created on demand
        // A synthetic failure: any case of three or more ops "fails", so FsCheck shrinks to exactly three.
        var runner = PropertyCheck.Check(p.Name, p, _ => { }, 50, PropertyCheck.SeededStart(7, p.Name), throwOnFailure: false,
            holds: c => ((TdpCase)c).Ops.Length < 3, counterexampleDirectory: target, campaignSeed: 12345678901234567890UL, campaignBatch: 4);

        string report = runner.FailureReport ?? throw new Xunit.Sdk.XunitException("the property did not fail");
        string path = runner.CounterexampleFile ?? throw new Xunit.Sdk.XunitException($"no file written: {runner.CounterexampleError}");
        Assert.True(File.Exists(path));
        Assert.Equal(Path.GetFullPath(target), Path.GetDirectoryName(path));
        Assert.Matches(TdpFileName(), Path.GetFileName(path));
        Assert.Contains($"counterexample: {path}\n", report, StringComparison.Ordinal);
        Assert.Contains($"replay: dotnet run --project difftests/MmuSpec.Cli -- replay {path}\n", report, StringComparison.Ordinal);
        string token = PropertyCheck.FormatReplay(runner.FailingReplay!);
        Assert.Contains($"replay: MMUSPEC_REPLAY={token} dotnet test", report, StringComparison.Ordinal);   // the token lines stay

        var x = CounterexampleFile.Load(path);
        var shrunk = Assert.IsType<TdpCase>(runner.FailingCase);
        Assert.Equal(3, shrunk.Ops.Length);
        Assert.True(shrunk.Equals(x.Case), "the file holds the shrunk case");
        Assert.Same(p, x.Property);
        Assert.Equal(p.Law, x.Law);
        Assert.Equal(3, x.Ops);
        Assert.Equal(token, x.ReplayToken);
        Assert.Equal(12345678901234567890UL, x.Seed);
        Assert.Equal(4L, x.Batch);
        Assert.Equal(BuildVersions.Current, x.Versions);
        Assert.InRange(x.Created, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddSeconds(1));
        Assert.Null(x.Divergence);   // spec and impl agree on it: only the synthetic predicate failed
        Assert.Null(x.Exception);
    }

    [Fact]
    public void A_directory_that_cannot_be_written_is_reported_and_the_failure_still_is()
    {
        string blocker = Path.Combine(dir, "a-file");
        File.WriteAllText(blocker, "not a directory");
        var p = DiffProperties.Find("walk-pae");
        var e = Assert.Throws<PropertyFailedException>(() => PropertyCheck.Check(p.Name, p, _ => { }, 20, PropertyCheck.SeededStart(3, p.Name),
            holds: _ => false, counterexampleDirectory: Path.Combine(blocker, "sub")));
        Assert.Contains("walk-pae: FAILED after 1 case,", e.Message, StringComparison.Ordinal);
        Assert.Contains($"counterexample: not written to {Path.Combine(blocker, "sub")}: ", e.Message, StringComparison.Ordinal);
        Assert.Contains("replay: MMUSPEC_REPLAY=", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("counterexample: /", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_directory_comes_from_MMUSPEC_COUNTEREXAMPLES_with_a_temp_default_and_off()
    {
        Assert.Equal(Path.Combine(Path.GetTempPath(), "mmuspec-counterexamples"), CounterexampleFile.DirectoryFor(null));
        Assert.Equal(Path.Combine(Path.GetTempPath(), "mmuspec-counterexamples"), CounterexampleFile.DirectoryFor("  "));
        Assert.Equal("/var/cx", CounterexampleFile.DirectoryFor("/var/cx"));
        Assert.Null(CounterexampleFile.DirectoryFor("off"));
        Assert.Null(CounterexampleFile.DirectoryFor("OFF"));
    }

    [Fact]
    public void Every_field_reads_back_as_written()
    {
        var p = DiffProperties.Find("shadow-roots-keep");
        var c = CaseSamples.EveryShadowOp();
        var divergence = new RecordedDivergence(9, "invlpg 0x123", "ok", "rejected", ["page (0x1, L1) [3]: spec - / impl leaf", "host memory [0x5000]: spec 0x1 / impl 0x0"],
            "first divergence: step 9: invlpg 0x123");
        var x = new Counterexample(p, "some law", c, 21, "1,3,7", ulong.MaxValue, long.MaxValue,
            new BuildVersions("1.2.3+abc", "abc", "10.0.100", ".NET 10.0.0", "Linux x64"),
            new DateTimeOffset(2025, 1, 31, 23, 59, 58, TimeSpan.Zero), divergence, "InvalidOperationException: boom");
        var back = CounterexampleFile.Parse(CounterexampleFile.ToJson(x));
        Assert.Same(p, back.Property);
        Assert.Equal("some law", back.Law);
        Assert.True(c.Equals(back.Case));
        Assert.Equal(21, back.Ops);
        Assert.Equal("1,3,7", back.ReplayToken);
        Assert.Equal(ulong.MaxValue, back.Seed);
        Assert.Equal(long.MaxValue, back.Batch);
        Assert.Equal(x.Versions, back.Versions);
        Assert.Equal(x.Created, back.Created);
        Assert.Equal("InvalidOperationException: boom", back.Exception);
        var d = back.Divergence!;
        Assert.Equal((9, "invlpg 0x123", "ok", "rejected", "first divergence: step 9: invlpg 0x123"), (d.Step!.Value, d.Op, d.Spec, d.Impl, d.Message));
        Assert.Equal(divergence.StateDifferences.ToArray(), d.StateDifferences.ToArray());

        var none = CounterexampleFile.Parse(CounterexampleFile.ToJson(x with { ReplayToken = null, Seed = null, Batch = null, Divergence = null, Exception = null }));
        Assert.Equal((null, null, null, null, null), (none.ReplayToken, none.Seed, none.Batch, none.Divergence, none.Exception));
    }

    [Fact]
    public void The_versions_name_the_commit_and_the_sdk_that_built_the_harness()
    {
        var v = BuildVersions.Current;
        Assert.Matches(@"^\d+\.\d+\.\d+", v.Sdk);
        Assert.StartsWith(".NET", v.Runtime, StringComparison.Ordinal);
        Assert.NotEqual(BuildVersions.Unknown, v.Os);
        // Built from a git checkout (this repository), the commit is known and in the informational version too.
        if (Directory.Exists(Path.Combine(WalkAndBatchTests.RepoRoot(), ".git")) || File.Exists(Path.Combine(WalkAndBatchTests.RepoRoot(), ".git")))
        {
            Assert.Matches("^[0-9a-f]{40}$", v.Commit);
            Assert.EndsWith("+" + v.Commit, v.Mmuspec, StringComparison.Ordinal);
        }
        Assert.False(v.OtherCommitThan(v));
        Assert.True(v.OtherCommitThan(v with { Commit = "0000000000000000000000000000000000000000" }) || v.Commit == BuildVersions.Unknown);
        Assert.False(v.OtherCommitThan(v with { Commit = BuildVersions.Unknown }));
    }

    public static TheoryData<string, string> Refusals() => new()
    {
        // mutation of a valid file (JSON path = value, or path- to remove), expected message
        { "format=2", "format: this file has format 2; this mmuspec reads format 1" },
        { "format=\"1\"", "format: expected the number 1, got the string \"1\"" },
        { "format-", "format is missing: this is not an mmuspec counterexample file" },
        { "property=\"walk-long9\"", "property: unknown property 'walk-long9' (known: walk-any-mode" },
        { "property=\"walk-pae\"", "case.kind: property walk-pae runs walk cases, not tdp cases" },
        { "property=3", "property: expected a string, got the number 3" },
        { "versions.commit-", "versions.commit is missing" },
        { "versions.branch=\"main\"", "unknown field 'versions.branch'" },
        { "created=\"yesterday\"", "created: 'yesterday' is not a time" },
        { "seed=42", "seed: expected a string, got the number 42" },
        { "seed=\"-1\"", "seed: '-1' is not a non-negative decimal number" },
        { "batch=\"4\"", "batch: expected an integer, got the string \"4\"" },
        { "replay_token=\"1,2\"", "replay_token: replay token '1,2' is not 'seed,gamma,size'" },
        { "ops=-1", "ops: -1 is negative" },
        { "divergence={\"step\":0,\"op\":null,\"spec\":\"a\",\"impl\":\"b\",\"state_differences\":[],\"message\":\"m\"}", "divergence.step: steps count from 1, got 0" },
        { "divergence={\"step\":null,\"op\":null,\"spec\":\"a\",\"impl\":\"b\",\"state_differences\":[1],\"message\":\"m\"}", "divergence.state_differences[0]: expected a string" },
        { "divergence={\"step\":null,\"op\":null,\"spec\":\"a\",\"impl\":\"b\",\"message\":\"m\"}", "divergence.state_differences is missing" },
        { "case.ops[1].id-", "case.ops[1].id is missing" },
        { "case=[]", "case: expected a case object, got an array" },
        { "shrunk=true", "unknown field 'shrunk'" },
        { "replay_token=\"1,2,3\"", "replay_token: replay token '1,2,3': the gamma 2 is even; SplitMix needs an odd gamma" },
        { "replay_token=\"1,3,301\"", "replay_token: replay token '1,3,301': the size 301 is outside 0..300" },
        { "replay_token=\"1,3,-1\"", "replay_token: replay token '1,3,-1': the size -1 is outside 0..300" },
        { "seed=\"18446744073709551616\"", "seed: '18446744073709551616' is larger than 64 bits" },
        { "batch=18446744073709551616", "batch: 18446744073709551616 is larger than 64 bits" },
        { "ops=2147483648", "ops: 2147483648 does not fit 32 bits" },
        { "case.ops[0].pages=\"0x100001\"", "case.ops[0].pages: 0x100001 pages is more than a memslot may have here" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void A_bad_file_is_refused_naming_the_field_and_the_file(string mutation, string expected)
    {
        var p = DiffProperties.Find("tdp-ept");
        var root = JsonNode.Parse(CounterexampleFile.ToJson(CounterexampleFile.Create(p, CaseSamples.EveryTdpOp() with { Config = new VmConfig(TdpFormat.Ept) })))!;
        bool remove = mutation.EndsWith('-');
        int eq = mutation.IndexOf('=');
        var path = (remove ? mutation[..^1] : mutation[..eq]).Split('.');
        JsonNode parent = root;
        foreach (var part in path.SkipLast(1))
            parent = part.EndsWith(']') ? parent[part[..part.IndexOf('[')]]![int.Parse(part[(part.IndexOf('[') + 1)..^1], System.Globalization.CultureInfo.InvariantCulture)]! : parent[part]!;
        if (remove) parent.AsObject().Remove(path[^1]); else parent[path[^1]] = JsonNode.Parse(mutation[(eq + 1)..]);

        string file = Path.Combine(dir, "bad.json");
        File.WriteAllText(file, root.ToJsonString());
        var e = Assert.Throws<InputException>(() => CounterexampleFile.Load(file));
        Assert.StartsWith($"{file}: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_walk_file_whose_memslot_wraps_past_2_64_is_refused_not_replayed_as_a_divergence()
    {
        // It used to be read, and replay reported the impl's refusal of the slot as a DIVERGENCE (exit 1).
        var p = DiffProperties.Find("walk-long4");
        var c = WalkGen.Build(5, 30, MmuSpec.Spec.Paging.PagingMode.Long4);
        var root = JsonNode.Parse(CounterexampleFile.ToJson(CounterexampleFile.Create(p, c)))!;
        root["case"]!["slots"]![1]!["base_gfn"] = "0xfffffffffffffff8";
        string file = Path.Combine(dir, "wrap.json");
        File.WriteAllText(file, root.ToJsonString());
        var e = Assert.Throws<InputException>(() => CounterexampleFile.Load(file));
        Assert.Equal($"{file}: case.slots[1]: 0x10 pages from gfn 0xfffffffffffffff8 run past the 64-bit guest-physical address space (gfn 0x10000000000000)", e.Message);
    }

    [Fact]
    public void A_field_named_twice_anywhere_in_the_file_is_refused()
    {
        string json = CounterexampleFile.ToJson(CounterexampleFile.Create(DiffProperties.Find("walk-pae"), CaseSamples.EveryWalkOp()));
        foreach (var (from, to, field) in new[]
        {
            ("\"law\": ", "\"law\": \"old\", \"law\": ", "law"),
            ("\"commit\": ", "\"commit\": \"x\", \"commit\": ", "versions.commit"),
            ("\"cr3\": \"0x1020\"", "\"cr3\": \"0x1020\", \"cr3\": \"0x2020\"", "case.cr3"),
            ("\"gpa\": \"0x2004\"", "\"gpa\": \"0x2004\", \"gpa\": \"0x2008\"", "case.ops[1].gpa"),
        })
        {
            string file = Path.Combine(dir, "dup.json");
            int at = json.IndexOf(from, StringComparison.Ordinal);
            Assert.True(at >= 0, from);
            File.WriteAllText(file, json[..at] + to + json[(at + from.Length)..]);
            var e = Assert.Throws<InputException>(() => CounterexampleFile.Load(file));
            Assert.Equal($"{file}: duplicate field '{field}': each field may appear once in an object", e.Message);
        }
    }

    [Fact]
    public void A_failed_write_leaves_no_temporary_file()
    {
        var x = CounterexampleFile.Create(DiffProperties.Find("tdp-ept"), CaseSamples.EveryTdpOp() with { Config = new VmConfig(TdpFormat.Ept) });
        // Onto a directory: the rename used to fail after the temporary file was written, leaving DIR.tmp.
        string target = Path.Combine(dir, "out");
        Directory.CreateDirectory(target);
        Assert.Throws<IOException>(() => CounterexampleFile.WriteTo(x, target));
        Assert.Equal([target], Directory.GetFileSystemEntries(dir));
        Assert.Empty(Directory.GetFileSystemEntries(target));
        // Into a directory that is not there: nothing at all.
        Assert.Throws<DirectoryNotFoundException>(() => CounterexampleFile.WriteTo(x, Path.Combine(dir, "nope", "x.json")));
        Assert.Equal([target], Directory.GetFileSystemEntries(dir));
        // A success leaves the file only.
        CounterexampleFile.WriteTo(x, Path.Combine(target, "x.json"));
        Assert.Equal([Path.Combine(target, "x.json")], Directory.GetFileSystemEntries(target));
    }

    [Fact]
    public void The_shrink_target_is_the_out_path_a_file_inside_the_out_directory_or_beside_the_input()
    {
        string file = Path.Combine(dir, "x.json");
        Assert.Equal(Path.Combine(dir, "x.shrunk.json"), CounterexampleFile.ShrinkTarget(file, null));
        Assert.Equal(Path.Combine(dir, "y.json"), CounterexampleFile.ShrinkTarget(file, Path.Combine(dir, "y.json")));
        // --out DIR used to be taken as a file name: the rename onto the directory failed and left DIR.tmp.
        string sub = Directory.CreateDirectory(Path.Combine(dir, "sub")).FullName;
        Assert.Equal(Path.Combine(sub, "x.shrunk.json"), CounterexampleFile.ShrinkTarget(file, sub));
        var e = Assert.Throws<InputException>(() => CounterexampleFile.ShrinkTarget(file, Path.Combine(dir, "no", "y.json")));
        Assert.Equal($"cannot write the shrunk case to '{Path.Combine(dir, "no", "y.json")}': directory '{Path.Combine(dir, "no")}' does not exist", e.Message);
        Assert.Equal([sub], Directory.GetFileSystemEntries(dir));
    }

    [Fact]
    public void A_missing_file_or_a_file_that_is_not_json_is_bad_input()
    {
        string missing = Path.Combine(dir, "nope.json");
        Assert.Equal($"counterexample file '{missing}' does not exist", Assert.Throws<InputException>(() => CounterexampleFile.Load(missing)).Message);
        string garbage = Path.Combine(dir, "garbage.json");
        File.WriteAllText(garbage, "{\"format\": 1,");
        Assert.StartsWith($"{garbage}: malformed JSON", Assert.Throws<InputException>(() => CounterexampleFile.Load(garbage)).Message, StringComparison.Ordinal);
        string array = Path.Combine(dir, "array.json");
        File.WriteAllText(array, "[1]");
        Assert.Equal($"{array}: a counterexample file is a JSON object, not an array", Assert.Throws<InputException>(() => CounterexampleFile.Load(array)).Message);
    }

    [GeneratedRegex("```json counterexample\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex DocExample();

    [Fact]
    public void The_example_in_the_format_doc_reads_and_replays()
    {
        string doc = File.ReadAllText(Path.Combine(WalkAndBatchTests.RepoRoot(), "docs", "counterexample-format.md"));
        var example = Assert.Single(DocExample().Matches(doc)).Groups[1].Value;
        var x = CounterexampleFile.Parse(example);
        Assert.Equal("walk-long4", x.Property.Name);
        var c = Assert.IsType<WalkCase>(x.Case);
        Assert.Equal((2, 1), (c.Setup.Length, c.Ops.Length));
        Assert.Equal(1, x.Divergence!.Step);
        Assert.Equal(c.Ops[0].ToString(), x.Divergence.Op);
        // The bug behind the example was injected for the doc: today's impl sets D, and the case agrees.
        Assert.True(CaseRuns.Trace(c).Agreed);
    }

    [Fact]
    public void The_file_name_is_the_property_the_time_and_a_hash_of_the_case()
    {
        var p = DiffProperties.Find("walk-long4");
        var c = WalkGen.Build(5, 30, MmuSpec.Spec.Paging.PagingMode.Long4);
        var x = CounterexampleFile.Create(p, c) with { Created = new DateTimeOffset(2025, 3, 4, 5, 6, 7, TimeSpan.Zero) };
        string name = CounterexampleFile.FileName(x);
        Assert.Matches(@"^walk-long4-20250304-050607-[0-9a-f]{8}\.json$", name);
        Assert.Equal(name, CounterexampleFile.FileName(x with { Seed = 1 }));                        // the case decides the hash
        Assert.NotEqual(name, CounterexampleFile.FileName(x with { Case = c.WithOps(c.Ops.RemoveAt(0)) }));
        string path = CounterexampleFile.Save(x, dir);
        Assert.Equal(Path.Combine(dir, name), path);
        Assert.False(File.Exists(path + ".tmp"));
        Assert.True(c.Equals(CounterexampleFile.Load(path).Case));
    }
}
