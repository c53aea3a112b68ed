using System.CommandLine;
using System.CommandLine.Invocation;
using MmuSpec.Cli;
using MmuSpec.Cli.Commands;
using MmuSpec.Harness.Images;

// mmuspec: differential campaigns, replays, explained walks and page-table dumps (docs/cli.md).
// Exit codes (docs/cli.md's table): 0 success / agreement, 1 spec and impl diverge, 2 bad input (and I/O errors), 3 internal error;
// check adds 4 (coverage incomplete), 5 (budget ended before every property ran) and 130 (interrupted).
var root = MmuSpecCommand.Create();

var parsed = root.Parse(args);
if (parsed.Action is ParseErrorAction)
{
    string command = parsed.CommandResult.Command is RootCommand ? "mmuspec" : $"mmuspec {parsed.CommandResult.Command.Name}";
    // "Required command was not provided" hides the real problem when a word was not recognized.
    var error = parsed.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parsed.Errors[0];
    return Cli.Fail($"{error.Message.TrimEnd('.')} (see '{command} --help')");
}
try
{
    return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (InputException e)
{
    return Cli.Fail(e.Message);
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException)
{
    // A full disk, a read-only directory, a vanished file: the environment's fault, not ours (exit 2, not 3).
    return Cli.Fail($"I/O error: {Messages.Of(e)}");
}
catch (Exception e) when (Environment.GetEnvironmentVariable("MMUSPEC_DEBUG") is not "1")
{
    Console.Out.Flush();
    Console.Error.WriteLine($"mmuspec: internal error: {e.GetType().Name}: {Messages.Of(e)} (set MMUSPEC_DEBUG=1 for the stack trace)");
    return Cli.InternalError;
}
