using FsCheck;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace MmuSpec.Harness.Running;

/// <summary>
/// Where a failing property writes its counterexample file (docs/counterexample-format.md): the
/// property, the directory (null: write none), and the <c>mmuspec check</c> campaign's seed and batch
/// when the run is part of one.
/// </summary>
public sealed record CounterexampleTarget(DiffProperty Property, string? Directory, ulong? CampaignSeed = null, long? CampaignBatch = null);

/// <summary>
/// FsCheck's <see cref="IRunner"/> for our properties: it writes to any text sink (xunit's
/// ITestOutputHelper, the console), counts shrinks, and on failure renders the shrunk
/// counterexample through <paramref name="explain"/>, writes it to a counterexample file when
/// <paramref name="counterexamples"/> says where, and ends with the exact replay lines.
/// FsCheck.Xunit's [Property] cannot take a runner (it installs its own, which prints FsCheck's
/// message), so the differential properties keep this one; see <see cref="PropertyCheck"/>.
/// </summary>
public sealed class PropertyRunner(string property, Action<string> write, Func<object, string> explain, bool verbose = false,
    CounterexampleTarget? counterexamples = null) : IRunner
{
    /// <summary>Set when the property failed: the whole message, also thrown by <see cref="PropertyCheck"/>.</summary>
    public string? FailureReport { get; private set; }
    public int TestsRun { get; private set; }
    /// <summary>The seed and size that regenerate the failing case before shrinking.</summary>
    public Replay? FailingReplay { get; private set; }
    /// <summary>The shrunk counterexample (a WalkCase, TdpCase or ShadowCase), when the property failed.</summary>
    public object? FailingCase { get; private set; }
    /// <summary>The full path of the counterexample file written for the failure, if one was.</summary>
    public string? CounterexampleFile { get; private set; }
    /// <summary>Why no counterexample file was written for the failure, if none was.</summary>
    public string? CounterexampleError { get; private set; }

    public void OnStartFixture(Type t) { }

    public void OnArguments(int ntest, FSharpList<object> args, FSharpFunc<int, FSharpFunc<FSharpList<object>, string>> every)
    {
        TestsRun = ntest;
        if (verbose && ntest % 100 == 0) write($"{property}: {CaseRuns.Count(ntest, "case")}");
    }

    public void OnShrink(FSharpList<object> args, FSharpFunc<FSharpList<object>, string> everyShrink) { }

    public void OnFinished(string name, TestResult result)
    {
        switch (result)
        {
            case TestResult.Passed p:
                TestsRun = p.Item1.NumberOfTests;
                write($"{property}: passed {CaseRuns.Count(p.Item1.NumberOfTests, "case")}");
                break;
            case TestResult.Exhausted e:
                FailureReport = $"{property}: gave up after {CaseRuns.Count(e.Item.NumberOfTests, "case")} (too many discarded)";
                write(FailureReport);
                break;
            case TestResult.Failed f:
                TestsRun = f.Item1.NumberOfTests;
                // Item6 is the seed the failing case was generated from and Item7 its size, so a
                // one-case run replaying them regenerates exactly that case (Item5 starts the whole run).
                var replay = new Replay(f.Item6, FSharpOption<int>.Some(f.Item7));
                FailingReplay = replay;
                string token = PropertyCheck.FormatReplay(replay);
                FailingCase = f.Item3.IsEmpty ? null : f.Item3.Head;
                string counterexample = FailingCase is null ? "(no arguments)" : Explain(FailingCase);
                // A property that returned false surfaces as a generic "Expected true" exception: not worth printing.
                string? exception = f.Item4 is Outcome.Failed { Item: var ex } && ex.GetType() != typeof(Exception)
                    ? $"{ex.GetType().Name}: {ex.Message}" : null;
                string outcome = exception is null ? "" : $"\nexception: {exception}";
                string file = FailingCase is null ? "" : WriteCounterexample(FailingCase, token, exception);
                FailureReport =
                    $"{property}: FAILED after {CaseRuns.Count(f.Item1.NumberOfTests, "case")}, shrunk {CaseRuns.Count(f.Item1.NumberOfShrinks, "time")}{outcome}\n" +
                    $"{counterexample}\n" +
                    file +
                    $"replay: MMUSPEC_REPLAY={token} dotnet test --filter \"DisplayName~{property}\"\n" +
                    $"    or: dotnet run --project difftests/MmuSpec.Cli -- replay {token} --property {property}";
                write(FailureReport);
                break;
        }
    }

    /// <summary>
    /// Writes the counterexample file and returns the report's lines about it. Never throws: a file
    /// that cannot be written is a line in the report, and the failure is reported all the same.
    /// </summary>
    string WriteCounterexample(object c, string token, string? exception)
    {
        if (counterexamples is null) return "";
        if (counterexamples.Directory is not { } directory)
        {
            CounterexampleError = $"${Running.CounterexampleFile.DirectoryVariable}=off";
            return $"counterexample: not written (${Running.CounterexampleFile.DirectoryVariable}=off)\n";
        }
        try
        {
            var x = Running.CounterexampleFile.Create(counterexamples.Property, c, token,
                counterexamples.CampaignSeed, counterexamples.CampaignBatch, exception);
            string path = Path.GetFullPath(Running.CounterexampleFile.Save(x, directory));
            CounterexampleFile = path;
            string quoted = path.Contains(' ', StringComparison.Ordinal) ? $"\"{path}\"" : path;
            return $"counterexample: {path}\n" +
                   $"replay: dotnet run --project difftests/MmuSpec.Cli -- replay {quoted}\n";
        }
        catch (Exception e)
        {
            CounterexampleError = $"{e.GetType().Name}: {e.Message}";
            return $"counterexample: not written to {directory}: {CounterexampleError}\n";
        }
    }

    string Explain(object arg)
    {
        try { return explain(arg); }
        catch (Exception e) { return $"{arg}\n(explaining the counterexample threw {e.GetType().Name}: {e.Message})"; }
    }
}
