using System.Diagnostics;
using MmuSpec.Cli.Commands;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// What CI reads from `mmuspec check`: its exit code. A campaign that was interrupted or whose budget
/// left a property without a single case must never exit 0 with "agree on every case" (docs/cli.md, exit codes).
/// These run the built tool as a process, because signals and exit codes exist only there.
/// </summary>
public sealed class CheckExitCodeTests
{
    [Fact]
    public void A_budget_that_ends_before_every_property_ran_is_a_failure_unless_allowed()
    {
        var r = MmuspecProcess.Run("check", "--seed", "1", "--time", "0.001", "--property", "walk-pae,walk-long4");
        Assert.Equal(CheckCommand.Partial, r.ExitCode);
        Assert.Contains("PARTIAL", r.Stdout);
        Assert.Contains("ran no case", r.Stdout);
        Assert.DoesNotContain("agree on every case\n", r.Stdout.ReplaceLineEndings("\n"));

        var allowed = MmuspecProcess.Run("check", "--seed", "1", "--time", "0.001", "--property", "walk-pae,walk-long4", "--allow-partial");
        Assert.Equal(0, allowed.ExitCode);
        Assert.Contains("PARTIAL (allowed)", allowed.Stdout);
    }

    [Fact]
    public void A_case_limit_that_reaches_every_property_exits_0_and_prints_ops_per_second()
    {
        var r = MmuspecProcess.Run("check", "--seed", "1", "--count", "20", "--batch-size", "10", "--property", "walk-pae,walk-long4");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("spec and impl agree on every case", r.Stdout);
        Assert.Contains("ops/s", r.Stdout);
        Assert.Contains("fewer cases than `dotnet test` runs (ran/dotnet test): walk-pae 10/1000, walk-long4 10/1000", r.Stdout);
    }

    [Theory]
    [InlineData("SIGTERM", "TERM", 1)]
    [InlineData("SIGINT", "INT", 1)]
    [InlineData("SIGINT", "INT", 2)]   // every job stops
    public void An_interrupted_campaign_exits_130_and_says_what_ran(string signal, string killName, int jobs)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;   // POSIX signals
        bool sent = false;   // once: a second signal is the runtime's, it terminates at once
        var r = MmuspecProcess.Run(["check", "--seed", "1", "--time", "600", "--property", "walk-pae,shadow-long4", "--jobs", jobs.ToString(System.Globalization.CultureInfo.InvariantCulture)],
            onStderrLine: (line, pid) =>
            {
                // The first progress line (every 2 s) proves the campaign is under way; then signal it.
                if (line.StartsWith('[') && !sent && (sent = true)) Process.Start("kill", ["-" + killName, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
            });
        Assert.Equal(CheckCommand.Interrupted, r.ExitCode);
        Assert.Contains($"{signal} received", r.Stderr);
        Assert.Contains("(interrupted)", r.Stdout);
        Assert.Contains("INTERRUPTED: spec and impl agree on the", r.Stdout);
        Assert.Contains("walk-pae", r.Stdout);
        Assert.DoesNotContain("spec and impl agree on every case", r.Stdout);
    }

    [Fact]
    public void The_tools_code_is_optimized_in_every_configuration()
    {
        // Directory.Build.props: a plain `dotnet run` (Debug) must not run a campaign ten times slower.
        Assert.False(MmuSpec.Harness.Running.BuildInfo.Unoptimized);
    }
}
