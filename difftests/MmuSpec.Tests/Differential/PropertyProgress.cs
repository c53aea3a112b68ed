using System.Globalization;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Prints one line as each differential property passes ("walk-pae: passed 1000 cases in 41.3 s"),
/// so a plain `dotnet test` shows progress through its minutes of campaigns. The line is an xunit
/// diagnostic message (enabled in xunit.runner.json): the VSTest adapter logs those as warnings,
/// which the console's default (minimal) verbosity prints as they come. Test output
/// (ITestOutputHelper, even with xunit's live output) is shown only at normal verbosity, and that
/// also prints a line for every one of the ~500 tests. A failure needs no line here: xunit prints it.
/// </summary>
public sealed class PropertyProgress(IMessageSink diagnostics)
{
    public void Passed(string property, int cases, TimeSpan elapsed) =>
        diagnostics.OnMessage(new DiagnosticMessage(string.Create(CultureInfo.InvariantCulture,
            $"{property}: passed {cases} {(cases == 1 ? "case" : "cases")} in {elapsed.TotalSeconds:0.0} s")));
}
