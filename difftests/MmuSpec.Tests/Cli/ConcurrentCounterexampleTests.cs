using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Tests.Concurrency;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Counterexample files of the concurrent property (docs/counterexample-format.md): the program, the bounds and
/// a recorded Coyote schedule survive the JSON round trip, a file is read as strictly as the others, and
/// <c>mmuspec replay FILE</c> reruns a concurrent case with the exit codes of the other families.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public sealed class ConcurrentCounterexampleTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("wt-concurrent-cex-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    static DiffProperty Property => DiffProperties.Find("tdp-concurrent");

    static ConcurrentTdpCase Sample(int i = 2) => (ConcurrentTdpCase)Property.Sample(20261204, 4).ElementAt(i);

    [Fact]
    public void A_concurrent_case_and_its_recorded_schedule_survive_the_json_round_trip()
    {
        var c = Sample() with { Schedule = """{"Settings":{"Strategy":"random","Seed":7},"Steps":["op(0)","op(1)"]}""" };
        string json = CaseJson.ToJson(c);
        var back = Assert.IsType<ConcurrentTdpCase>(CaseJson.Parse(json));
        Assert.Equal(json, CaseJson.ToJson(back));
        Assert.Equal(c.Program.ToString(), back.Program.ToString());
        Assert.Contains("\"schedule\": {", json, StringComparison.Ordinal);
        Assert.Contains("\"kind\": \"tdp-concurrent\"", json, StringComparison.Ordinal);
        // Without a schedule the case explores; the field is written as null.
        Assert.Contains("\"schedule\": null", CaseJson.ToJson(Sample()), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("\"schedule\": null", "\"schedule\": \"trace\"", "schedule: expected a Coyote trace object or null")]
    [InlineData("\"iterations\": 10", "\"iterations\": 0", "iterations: 0; a case explores 1 to")]
    public void A_bad_concurrent_case_is_refused_naming_the_field(string from, string to, string expected)
    {
        string json = CaseJson.ToJson(Sample());
        Assert.Contains(from, json, StringComparison.Ordinal);
        // In the threads (the setup has its own rule), or the last occurrence.
        int threads = json.IndexOf("\"threads\"", StringComparison.Ordinal);
        int at = json.IndexOf(from, threads, StringComparison.Ordinal) is var i and >= 0 ? i : json.LastIndexOf(from, StringComparison.Ordinal);
        string bad = json[..at] + to + json[(at + from.Length)..];
        var e = Assert.ThrowsAny<InputException>(() => CaseJson.Parse(bad));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_op_the_concurrent_mmu_does_not_run_is_refused_in_a_thread()
    {
        var c = Sample() with { Program = new ConcurrentProgram<MmuSpec.Spec.Tdp.TdpOp>([[new MmuSpec.Spec.Tdp.TdpOp.DeleteSlot(0)]]) };
        var e = Assert.ThrowsAny<InputException>(() => CaseJson.Parse(CaseJson.ToJson(c)));
        Assert.Contains("threads[0][0]", e.Message, StringComparison.Ordinal);
        Assert.Contains("is not an op the concurrent MMU runs", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Replay_of_a_linearizable_concurrent_file_exits_0_and_a_broken_one_exits_2()
    {
        var c = Sample();
        var x = CounterexampleFile.Create(Property, c);
        Assert.Null(x.Divergence);                                          // linearizable: nothing recorded
        Assert.Null(((ConcurrentTdpCase)x.Case).Schedule);                  // and no schedule pinned
        string path = CounterexampleFile.Save(x, dir);

        var ok = MmuspecProcess.Run("replay", path);
        Assert.True(ok.ExitCode == 0, ok.Stdout + ok.Stderr);
        Assert.Contains("every history linearizable", ok.Stdout, StringComparison.Ordinal);
        Assert.Contains("result: spec and impl agree", ok.Stdout, StringComparison.Ordinal);

        string broken = Path.Combine(dir, "broken.json");
        File.WriteAllText(broken, File.ReadAllText(path).Replace("\"iterations\": 10", "\"iterations\": -1", StringComparison.Ordinal));
        var bad = MmuspecProcess.Run("replay", broken);
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("mmuspec: error: ", bad.Stderr, StringComparison.Ordinal);
        Assert.Contains("iterations", bad.Stderr, StringComparison.Ordinal);
        Assert.Equal("", bad.Stdout);
    }
}
