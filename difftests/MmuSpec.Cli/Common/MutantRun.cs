using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Mutants;
using MmuSpec.Harness.Running;

namespace MmuSpec.Cli;

/// <summary>What happened to one catalogued bug.</summary>
/// <param name="Status">"caught", or why not: "not caught", "patch does not apply", "does not build", "campaign timed out", "campaign failed", "baseline disagrees".</param>
/// <param name="SecondsToCatch">Campaign time until the first failing case (before shrinking).</param>
/// <param name="ShrunkOps">Operations in the shrunk counterexample.</param>
public sealed record MutantOutcome(
    MutantEntry Entry, string Status, double? SecondsToCatch, int? ShrunkOps, string? Property, long Cases,
    string? Counterexample, double BuildSeconds, string Detail)
{
    /// <summary>Coyote schedules the campaign explored (concurrency mutants; shrinking included), when it reported them.</summary>
    public long? Schedules { get; init; }

    public bool Caught => Status == "caught";
}

/// <summary>The knobs of a run: per-bug campaign budget, master seed, the shrink target.</summary>
public sealed record MutantRunOptions(TimeSpan Budget, ulong Seed, int MaxOps, TimeSpan ShrinkAllowance, bool Keep);

/// <summary>
/// Runs the catalog: copies the repository's sources to a temporary directory, builds the unmutated
/// CLI once (kept as the baseline), then for each entry applies its patch, builds, runs a
/// fixed-seed <c>mmuspec check</c> over the entry's properties with the budget, replays the shrunk
/// counterexample on the baseline (it must agree there, or the catch is not the patch's doing), and
/// reverts the patch. Builds are incremental: only impl/ and what depends on it recompile.
/// </summary>
public sealed class MutantRun(string repositoryRoot, MutantRunOptions options, Action<string> progress)
{
    const string CliProject = "difftests/MmuSpec.Cli/MmuSpec.Cli.csproj";
    const string CliOutput = "difftests/MmuSpec.Cli/bin/Release/net10.0";
    // Concurrency mutants: Debug (optimized too), where freed table pages are poisoned.
    const string DebugCliOutput = "difftests/MmuSpec.Cli/bin/Debug/net10.0";
    // A patch may leave an unused local or an unreachable branch; a mutant is still a mutant.
    static readonly string[] BuildArgs = ["build", CliProject, "-c", "Release", "-nologo", "-v", "q", "-p:TreatWarningsAsErrors=false", "-clp:ErrorsOnly"];
    static readonly string[] DebugBuildArgs = ["build", CliProject, "-c", "Debug", "-nologo", "-v", "q", "-p:TreatWarningsAsErrors=false", "-clp:ErrorsOnly"];
    static readonly TimeSpan BuildDeadline = TimeSpan.FromMinutes(10);

    public string WorkDirectory { get; } = Path.Combine(Path.GetTempPath(), $"mmuspec-mutants-{Environment.ProcessId}-{DateTime.UtcNow:HHmmss}");

    /// <summary>Runs every entry; the baseline build failing is an exception (nothing can be judged).</summary>
    public IReadOnlyList<MutantOutcome> Run(IReadOnlyList<MutantEntry> entries)
    {
        try
        {
            progress($"copying sources to {WorkDirectory}");
            SourceTree.Copy(repositoryRoot, WorkDirectory);
            progress("building the unmutated CLI (Release)");
            var baseline = Dotnet(BuildArgs, BuildDeadline);
            if (baseline.ExitCode != 0)
                throw new InvalidOperationException($"the unmutated sources do not build:\n{baseline.Tail()}");
            string baselineBin = Path.Combine(WorkDirectory, "baseline-bin");
            SourceTree.CopyDirectory(Path.Combine(WorkDirectory, CliOutput), baselineBin);
            progress($"baseline built in {baseline.Elapsed.TotalSeconds:0} s");

            var outcomes = new List<MutantOutcome>();
            for (int i = 0; i < entries.Count; i++)
            {
                var outcome = RunOne(entries[i], baselineBin, $"[{i + 1}/{entries.Count}] {entries[i].Name}");
                outcomes.Add(outcome);
            }
            return outcomes;
        }
        finally
        {
            if (!options.Keep)
            {
                try { Directory.Delete(WorkDirectory, recursive: true); }
                catch (IOException e) { progress($"could not remove {WorkDirectory}: {e.Message}"); }
            }
        }
    }

    MutantOutcome RunOne(MutantEntry entry, string baselineBin, string label)
    {
        string patch = Path.Combine(WorkDirectory, "current.patch");
        File.WriteAllText(patch, entry.Patch);
        var check = Git(["apply", "--check", patch]);
        if (check.ExitCode != 0)
        {
            progress($"{label}: the patch does not apply");
            return Outcome(entry, "patch does not apply", check.Tail(6));
        }
        Git(["apply", patch]).ThrowIfFailed("git apply");
        try
        {
            progress($"{label}: applied; building");
            var build = Dotnet(entry.Debug ? DebugBuildArgs : BuildArgs, BuildDeadline);
            double buildSeconds = build.Elapsed.TotalSeconds;
            if (build.ExitCode != 0)
            {
                progress($"{label}: does not build");
                return Outcome(entry, "does not build", build.Tail(8)) with { BuildSeconds = buildSeconds };
            }
            progress($"{label}: built in {buildSeconds:0} s; campaign over {string.Join(", ", entry.Properties)}");
            return Campaign(entry, baselineBin, label) with { BuildSeconds = buildSeconds };
        }
        finally
        {
            Git(["apply", "-R", patch]).ThrowIfFailed("git apply -R (reverting the patch)");
        }
    }

    MutantOutcome Campaign(MutantEntry entry, string baselineBin, string label)
    {
        string cexDir = Path.Combine(WorkDirectory, "counterexamples", entry.Name.Replace('/', '-'));
        Directory.CreateDirectory(cexDir);
        string[] args =
        [
            Path.Combine(WorkDirectory, entry.Debug ? DebugCliOutput : CliOutput, "mmuspec.dll"), "check",
            "--seed", options.Seed.ToString(CultureInfo.InvariantCulture),
            "--time", options.Budget.TotalSeconds.ToString(CultureInfo.InvariantCulture),
            "--property", string.Join(',', entry.Properties),
            "--allow-partial",   // a budget that left a property without a case and caught nothing: "not caught", not a failed campaign
            "--json",
        ];
        var env = new Dictionary<string, string> { ["MMUSPEC_COUNTEREXAMPLES"] = cexDir };
        var run = Dotnet(args, options.Budget + options.ShrinkAllowance + TimeSpan.FromSeconds(60), env);
        if (run.TimedOut)
            return Outcome(entry, "campaign timed out", $"no result within {(options.Budget + options.ShrinkAllowance).TotalSeconds:0} s (budget + shrink allowance)");
        if (run.ExitCode is not (Cli.Ok or Cli.Diverged))
            return Outcome(entry, "campaign failed", $"exit code {run.ExitCode}:\n{run.Tail()}");

        using var doc = JsonDocument.Parse(run.Stdout);
        var root = doc.RootElement;
        long cases = root.GetProperty("cases").GetInt64();
        long? schedules = root.TryGetProperty("schedules", out var sc) && sc.GetInt64() > 0 ? sc.GetInt64() : null;
        if (root.GetProperty("failure").ValueKind == JsonValueKind.Null)
        {
            progress($"{label}: NOT caught in {CaseRuns.Count(cases, "case")}");
            return Outcome(entry, "not caught", $"{CaseRuns.Count(cases, "case")} in {root.GetProperty("seconds").GetDouble():0.0} s, no divergence") with { Cases = cases, Schedules = schedules };
        }

        var failure = root.GetProperty("failure");
        string property = failure.GetProperty("property").GetString()!;
        double found = failure.GetProperty("found_after_seconds").GetDouble();
        int? ops = failure.GetProperty("shrunk_ops").ValueKind == JsonValueKind.Number ? failure.GetProperty("shrunk_ops").GetInt32() : null;
        string? file = failure.GetProperty("counterexample").GetString();
        string firstLine = failure.GetProperty("report").GetString()!.Split('\n')[0];
        var outcome = new MutantOutcome(entry, "caught", found, ops, property, cases, file, 0, firstLine) { Schedules = schedules };
        progress($"{label}: caught by {property} after {found:0.0} s, shrunk to {(ops is { } n ? CaseRuns.Count(n, "op") : "? ops")}");

        // The shrunk case must agree on the unmutated build: otherwise the campaign found something
        // else (a bug in main, or a flaky harness) and the catch says nothing about the patch.
        if (file is null || !File.Exists(file))
            return outcome with { Status = "campaign failed", Detail = "the campaign wrote no counterexample file" };
        var replay = Dotnet([Path.Combine(baselineBin, "mmuspec.dll"), "replay", file], TimeSpan.FromMinutes(2));
        if (replay.ExitCode != Cli.Ok)
            return outcome with { Status = "baseline disagrees", Detail = $"the counterexample also fails without the patch (replay exit {replay.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "timeout"})" };
        return outcome;
    }

    static MutantOutcome Outcome(MutantEntry entry, string status, string detail) =>
        new(entry, status, null, null, null, 0, null, 0, detail);

    ChildResult Dotnet(IEnumerable<string> args, TimeSpan deadline, IReadOnlyDictionary<string, string>? env = null) =>
        ChildProcess.Run("dotnet", args, WorkDirectory, deadline, env);

    ChildResult Git(IEnumerable<string> args) => ChildProcess.Run("git", args, WorkDirectory, TimeSpan.FromMinutes(1));
}

static class ChildResultExtensions
{
    public static void ThrowIfFailed(this ChildResult r, string what)
    {
        if (r.ExitCode != 0) throw new InvalidOperationException($"{what} failed: {r.Tail(6)}");
    }
}

/// <summary>Copies the sources a build needs (not bin/, obj/, .git, bench/ or docs/).</summary>
static class SourceTree
{
    static readonly string[] Skip = ["bin", "obj", ".git", "bench", "docs", "BenchmarkDotNet.Artifacts", "TestResults", ".vs"];

    /// <summary>The repository root: the nearest directory at or above <paramref name="start"/> with MmuSpec.sln.</summary>
    public static string? FindRoot(string start)
    {
        for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MmuSpec.sln"))) return d.FullName;
        return null;
    }

    /// <summary>Copies the sources under <paramref name="root"/>, skipping build outputs and what a build does not need.</summary>
    public static void Copy(string root, string target) => CopyDirectory(root, target, name => Skip.Contains(name));

    /// <summary>Copies a directory tree; <paramref name="skip"/> names subdirectories to leave out (none by default).</summary>
    public static void CopyDirectory(string source, string target, Func<string, bool>? skip = null)
    {
        Directory.CreateDirectory(target);
        foreach (string f in Directory.GetFiles(source))
            File.Copy(f, Path.Combine(target, Path.GetFileName(f)), overwrite: true);
        foreach (string d in Directory.GetDirectories(source))
        {
            string name = Path.GetFileName(d);
            if (skip?.Invoke(name) == true) continue;
            CopyDirectory(d, Path.Combine(target, name), skip);
        }
    }
}
