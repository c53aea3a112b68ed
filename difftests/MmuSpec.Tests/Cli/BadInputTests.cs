using System.Text.Json.Nodes;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Bad input to the mmuspec executable, run as a user runs it: one line <c>mmuspec: error: ...</c> on
/// stderr, exit code 2 (never 1, a divergence, or 3, an internal error), and no file written. Each
/// row is a command line, the files it reads (made in a fresh directory, which is also the working
/// directory), the environment, and a fragment of the expected message.
/// </summary>
public sealed class BadInputTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("wt-bad-input-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>The files a row may name: a valid walk counterexample and variants of it.</summary>
    static readonly Dictionary<string, Func<string>> Files = new()
    {
        ["ok.json"] = () => WalkFile(_ => { }),
        ["wrap.json"] = () => WalkFile(r => r["case"]!["slots"]![1]!["base_gfn"] = "0xfffffffffffffff8"),
        ["wide.json"] = () => WalkFile(r => r["case"]!["cr3"] = "0x1_0000_0000_0000_0000"),
        ["dup.json"] = () => Duplicate(WalkFile(_ => { }), "\"law\":", "\"law\":\"x\",\"law\":"),
        ["even.json"] = () => WalkFile(r => r["replay_token"] = "1,2,3"),
        ["raw.img"] = () => new string('\0', 2 * 4096),
        ["dup-scenario.json"] = () => """{"mode":"long4","cr3":"0x1000","cr3":"0x2000","access":{"gva":"0x0"}}""",
    };

    public static TheoryData<string, string, string> Rows() => new()
    {
        // command line ('|' between arguments), environment ("NAME=value" or ""), expected message fragment
        { "replay|1,2,3|--property|walk-long4", "", "replay token '1,2,3': the gamma 2 is even; SplitMix needs an odd gamma" },
        { "replay|1,2,3|--property|walk-long9", "", "--property: unknown property 'walk-long9'" },
        { "replay|1,3,999999999|--property|walk-long4", "", "the size 999999999 is outside 0..300" },
        { "replay|1,3,-5|--property|shadow-long4", "", "the size -5 is outside 0..300" },
        { "replay|1,3|--property|tdp-ept", "", "replay token '1,3' is not 'seed,gamma,size'" },
        { "replay|--property|walk-long4", "MMUSPEC_REPLAY=1,2,3", "$MMUSPEC_REPLAY: replay token '1,2,3': the gamma 2 is even" },
        { "replay|1,3,5", "", "replay needs --property NAME with a token" },
        { "replay|1,3,5|--property|walk-long4|--shrink", "", "--shrink and --out need a counterexample file" },
        { "replay|missing.json", "", "counterexample file 'missing.json' does not exist" },
        { "replay|wrap.json", "", "wrap.json: case.slots[1]: 0x10 pages from gfn 0xfffffffffffffff8 run past the 64-bit guest-physical address space" },
        { "replay|wide.json", "", "wide.json: case.cr3: '0x1_0000_0000_0000_0000' is larger than 64 bits" },
        { "replay|dup.json", "", "dup.json: duplicate field 'law': each field may appear once in an object" },
        { "replay|even.json", "", "even.json: replay_token: replay token '1,2,3': the gamma 2 is even" },
        { "replay|ok.json|--property|tdp-ept", "", "--property tdp-ept: ok.json is a counterexample of walk-long4" },
        { "replay|ok.json|--shrink|--out|no/such/dir/x.json", "", "cannot write the shrunk case to 'no/such/dir/x.json': directory" },
        { "walk|--scenario|dup-scenario.json", "", "duplicate field 'cr3': each field may appear once in an object" },
        { "synth-image|--out|no/such/dir/x.img|--size|4M", "", "cannot write 'no/such/dir/x.img'" },
        { "walk|--image|raw.img|--cpu|1|--cr3|1000|--mode|long4|--gva|0", "", "--cpu picks a vCPU's registers from an ELF core's QEMU note; 'raw.img' is raw memory" },
        { "walk|--batch|--scenario|ok.json|--cpu|1", "", "--cpu cannot be combined with --batch" },
        { "check|--count|1|--property|walk-pae,", "", "--property: 'walk-pae,' has an empty name" },
        { "check|--count|1|--property|,walk-pae", "", "--property: ',walk-pae' has an empty name" },
        { "check|--count|1|--property|walk-pae,,walk-long4", "", "has an empty name (a leading, trailing or doubled comma)" },
        { "check|--count|1|--property|,", "", "--property: no property named" },
        { "check|--count|1|--property|walk-nope", "", "unknown property 'walk-nope'" },
        { "check|--count|1|--jobs|0", "", "--jobs: '0' is not a number of jobs from 1 to 256" },
        { "check|--count|1|--jobs|-3", "", "--jobs: '-3' is not a number of jobs from 1 to 256" },
        { "check|--count|1|--jobs|two", "", "--jobs: 'two' is not a number of jobs from 1 to 256" },
        { "check|--count|1|--jobs|2.5", "", "--jobs: '2.5' is not a number of jobs from 1 to 256" },
        { "check|--count|1|--jobs|257", "", "--jobs: '257' is not a number of jobs from 1 to 256" },
        { "stress|--threads|5", "", "--threads: '5' is not from 2 to 4" },
        { "stress|--threads|1", "", "--threads: '1' is not from 2 to 4" },
        { "stress|--rounds|0", "", "--rounds: '0' is not a positive number" },
        { "stress|--count|-1", "", "--count: '-1' is not a positive number" },
        { "stress|--time|soon", "", "--time: 'soon' is not a duration" },
        { "stress|--seed|0x1_0000_0000_0000_0000", "", "--seed: '0x1_0000_0000_0000_0000' is larger than 64 bits" },
    };

    [Theory]
    [MemberData(nameof(Rows))]
    public void Bad_input_is_one_line_exit_2_and_writes_nothing(string argv, string env, string expected)
    {
        foreach (var (name, content) in Files) File.WriteAllText(Path.Combine(dir, name), content());
        var before = Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order().ToList();

        var env1 = env.Length == 0 ? null : new Dictionary<string, string> { [env[..env.IndexOf('=')]] = env[(env.IndexOf('=') + 1)..] };
        var (exit, stdout, stderr) = MmuspecProcess.Run(argv.Split('|'), dir, env1);

        Assert.True(exit == 2, $"exit {exit}, expected 2\nstdout: {stdout}\nstderr: {stderr}");
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => !l.StartsWith("mmuspec: note: ", StringComparison.Ordinal));
        Assert.StartsWith("mmuspec: error: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
        Assert.Equal(before, Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order().ToList());
    }

    [Fact]
    public void Output_to_a_full_disk_is_an_io_error_exit_2_not_an_internal_error()
    {
        if (!File.Exists("/dev/full")) return;   // Linux: a device on which every write fails with ENOSPC
        foreach (string command in new[] { "replay 1,3,5 --property walk-long4", "check --count 3 --property walk-pae --json" })
        {
            var (exit, stdout, stderr) = MmuspecProcess.RunRedirected(command, "> /dev/full", dir);
            Assert.True(exit == 2, $"{command}: exit {exit}, expected 2\nstdout: {stdout}\nstderr: {stderr}");
            Assert.EndsWith("mmuspec: error: I/O error: No space left on device", stderr.TrimEnd(), StringComparison.Ordinal);
        }
    }

    static string WalkFile(Action<JsonNode> edit)
    {
        var p = DiffProperties.Find("walk-long4");
        var c = WalkGen.Build(5, 10, PagingMode.Long4);
        var x = new Counterexample(p, p.Law, c, p.OpCount(c), "1,3,5", null, null, BuildVersions.Current, DateTimeOffset.UtcNow, null, null);
        var root = JsonNode.Parse(CounterexampleFile.ToJson(x))!;
        edit(root);
        return root.ToJsonString();
    }

    static string Duplicate(string json, string from, string to)
    {
        int at = json.IndexOf(from, StringComparison.Ordinal);
        Assert.True(at >= 0, from);
        return json[..at] + to + json[(at + from.Length)..];
    }
}
