using System.Diagnostics;
using System.Text;
using MmuSpec.Harness.Running;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Runs the built mmuspec tool (copied beside the tests by the project reference) as a child process, as a
/// user or CI runs it: exit codes, signals and what reaches stdout and stderr exist only there. Bounded in
/// time; the child inherits none of a developer's MMUSPEC_* settings and writes no counterexample file.
/// </summary>
static class MmuspecProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);

    /// <summary>mmuspec.dll beside this test assembly.</summary>
    public static string Dll
    {
        get
        {
            string dll = Path.Combine(AppContext.BaseDirectory, "mmuspec.dll");
            Assert.True(File.Exists(dll), $"{dll} is missing: the test project references MmuSpec.Cli, build the solution");
            return dll;
        }
    }

    public static string Dotnet => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";

    public static Result Run(params string[] args) => Run((IEnumerable<string>)args, null);

    /// <summary>
    /// Runs <c>mmuspec ARGS</c> in <paramref name="workingDirectory"/> with <paramref name="environment"/> added;
    /// <paramref name="onStderrLine"/> sees each stderr line as it comes, with the child's pid (to signal it).
    /// </summary>
    public static Result Run(IEnumerable<string> args, string? workingDirectory = null,
        IReadOnlyDictionary<string, string>? environment = null, Action<string, int>? onStderrLine = null) =>
        Start(new ProcessStartInfo(Dotnet), ["exec", Dll, .. args], workingDirectory, environment, onStderrLine);

    /// <summary>Runs <c>mmuspec ARGS</c> through /bin/sh with <paramref name="redirection"/> (e.g. "&gt; /dev/full") after it.</summary>
    public static Result RunRedirected(string args, string redirection, string? workingDirectory = null) =>
        Start(new ProcessStartInfo("/bin/sh"), ["-c", $"exec \"$0\" exec '{Dll}' {args} {redirection}", Dotnet], workingDirectory, null, null);

    static Result Start(ProcessStartInfo info, IEnumerable<string> args, string? workingDirectory,
        IReadOnlyDictionary<string, string>? environment, Action<string, int>? onStderrLine)
    {
        info.RedirectStandardOutput = info.RedirectStandardError = info.RedirectStandardInput = true;
        info.UseShellExecute = false;
        if (workingDirectory is not null) info.WorkingDirectory = workingDirectory;
        foreach (string a in args) info.ArgumentList.Add(a);
        // The child must not inherit a developer's replay, seed or depth.
        foreach (string v in new[] { PropertyCheck.ReplayVariable, PropertyCheck.SeedVariable, PropertyCheck.MaxTestVariable, PropertyCheck.ShrinkVariable, "MMUSPEC_DEBUG" })
            info.Environment.Remove(v);
        info.Environment[CounterexampleFile.DirectoryVariable] = "off";
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) info.Environment[name] = value;

        using var p = Process.Start(info) ?? throw new InvalidOperationException("cannot start mmuspec");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = new StringBuilder();
        var errDone = Task.Run(() =>
        {
            while (p.StandardError.ReadLine() is { } line)
            {
                stderr.Append(line).Append('\n');
                onStderrLine?.Invoke(line, p.Id);
            }
        });
        if (!p.WaitForExit(Limit))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"mmuspec {string.Join(' ', info.ArgumentList)} ran past {Limit.TotalMinutes} min");
        }
        errDone.Wait();
        return new Result(p.ExitCode, stdout.Result, stderr.ToString());
    }
}
