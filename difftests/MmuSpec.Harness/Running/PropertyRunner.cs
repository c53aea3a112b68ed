using FsCheck;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace MmuSpec.Harness.Running;

/// <summary>
/// FsCheck's <see cref="IRunner"/> for our properties: it writes to any text sink (xunit's
/// ITestOutputHelper, the console), counts shrinks, and on failure renders the shrunk
/// counterexample through <paramref name="explain"/> followed by the exact replay lines.
/// This is the part of FsCheck.Xunit we need, without the package.
/// </summary>
public sealed class PropertyRunner(string property, Action<string> write, Func<object, string> explain, bool verbose = false) : IRunner
{
    /// <summary>Set when the property failed: the whole message, also thrown by <see cref="PropertyCheck"/>.</summary>
    public string? FailureReport { get; private set; }
    public int TestsRun { get; private set; }
    public Replay? FailingReplay { get; private set; }

    public void OnStartFixture(Type t) { }

    public void OnArguments(int ntest, FSharpList<object> args, FSharpFunc<int, FSharpFunc<FSharpList<object>, string>> every)
    {
        TestsRun = ntest;
        if (verbose && ntest % 100 == 0) write($"{property}: {ntest} cases");
    }

    public void OnShrink(FSharpList<object> args, FSharpFunc<FSharpList<object>, string> everyShrink) { }

    public void OnFinished(string name, TestResult result)
    {
        switch (result)
        {
            case TestResult.Passed p:
                TestsRun = p.Item1.NumberOfTests;
                write($"{property}: passed {p.Item1.NumberOfTests} cases");
                break;
            case TestResult.Exhausted e:
                FailureReport = $"{property}: gave up after {e.Item.NumberOfTests} cases (too many discarded)";
                write(FailureReport);
                break;
            case TestResult.Failed f:
                TestsRun = f.Item1.NumberOfTests;
                // Item6 is the seed the failing case was generated from and Item7 its size, so a
                // one-case run replaying them regenerates exactly that case (Item5 starts the whole run).
                var replay = new Replay(f.Item6, FSharpOption<int>.Some(f.Item7));
                FailingReplay = replay;
                string token = PropertyCheck.FormatReplay(replay);
                string counterexample = f.Item3.IsEmpty ? "(no arguments)" : Explain(f.Item3.Head);
                // A property that returned false surfaces as a generic "Expected true" exception: not worth printing.
                string outcome = f.Item4 is Outcome.Failed { Item: var ex } && ex.GetType() != typeof(Exception)
                    ? $"\nexception: {ex.GetType().Name}: {ex.Message}" : "";
                FailureReport =
                    $"{property}: FAILED after {f.Item1.NumberOfTests} cases, shrunk {f.Item1.NumberOfShrinks} times{outcome}\n" +
                    $"{counterexample}\n" +
                    $"replay: MMUSPEC_REPLAY={token} dotnet test --filter \"DisplayName~{property}\"\n" +
                    $"    or: dotnet run --project difftests/MmuSpec.Cli -- replay {token} --property {property}";
                write(FailureReport);
                break;
        }
    }

    string Explain(object arg)
    {
        try { return explain(arg); }
        catch (Exception e) { return $"{arg}\n(explaining the counterexample threw {e.GetType().Name}: {e.Message})"; }
    }
}
