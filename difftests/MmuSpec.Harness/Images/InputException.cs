namespace MmuSpec.Harness.Images;

/// <summary>
/// Bad input from the user: a malformed scenario, a missing file, an image too short for the walk.
/// The message is one line, ready to print after "mmuspec: error: "; the CLI exits with 2.
/// </summary>
public sealed class InputException(string message) : Exception(message)
{
    /// <summary>The same problem with a location in front, e.g. the file name or "line 3".</summary>
    public InputException At(string where) => new($"{where}: {Message}");
}
