using System.Diagnostics;
using System.Text;

namespace MmuSpec.Cli;

/// <summary>The outcome of a child process: exit code (null if it was killed at its deadline) and its output.</summary>
public sealed record ChildResult(int? ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
{
    public bool TimedOut => ExitCode is null;

    /// <summary>The last <paramref name="lines"/> lines of stdout and stderr, for an error message.</summary>
    public string Tail(int lines = 15)
    {
        var all = (Stdout + "\n" + Stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return string.Join("\n", all.TakeLast(lines));
    }
}

/// <summary>Runs a program to completion or to a deadline, capturing its output (used by <c>mmuspec mutants</c>).</summary>
public static class ChildProcess
{
    public static ChildResult Run(string file, IEnumerable<string> args, string workingDirectory, TimeSpan deadline,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(file)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args) info.ArgumentList.Add(a);
        if (environment is not null)
            foreach (var (k, v) in environment) info.Environment[k] = v;

        var clock = Stopwatch.StartNew();
        using var process = new Process { StartInfo = info };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        try { process.Start(); }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"cannot start '{file}': {e.Message}", e);
        }
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        bool exited = process.WaitForExit(deadline);
        if (!exited)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            process.WaitForExit();
        }
        else process.WaitForExit();   // drains the asynchronous readers
        lock (stdout) lock (stderr)
            return new ChildResult(exited ? process.ExitCode : null, stdout.ToString(), stderr.ToString(), clock.Elapsed);
    }
}
