namespace MmuSpec.Harness.Images;

/// <summary>
/// Batch mode: one JSON scenario per input line, one JSON result per output line, in order. A bad
/// line yields {"error": "line N: ..."} in its place and the batch goes on. Blank lines and lines
/// starting with '#' or "//" are skipped and produce no output.
/// </summary>
public static class BatchWalk
{
    /// <summary>
    /// Opens a batch file to be read line by line as the batch goes: never whole, so memory stays
    /// bounded by the longest line, whatever the file's size.
    /// </summary>
    public static TextReader OpenFile(FileInfo file)
    {
        if (Directory.Exists(file.FullName)) throw new InputException($"scenario '{file}' is a directory");
        if (!file.Exists) throw new InputException($"scenario '{file}' does not exist");
        try { return new StreamReader(file.FullName, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true, new FileStreamOptions { BufferSize = 1 << 16 }); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"cannot read scenario '{file}': {e.Message}");
        }
    }

    /// <summary>
    /// Runs every line through <paramref name="engine"/>; returns how many lines failed. With
    /// <paramref name="image"/>, every line walks over that image (and must not list memory). Reads a
    /// line, answers it, then reads the next: a line's result is written before the next line is read.
    /// </summary>
    public static int Run(TextReader input, TextWriter output, Func<Scenario, WalkReport> engine, Spec.Memory.IPhysicalMemoryImage? image = null)
    {
        int lineNumber = 0, failed = 0;
        for (string? line = ReadLine(input, lineNumber); line is not null; line = ReadLine(input, lineNumber))
        {
            lineNumber++;
            string trimmed = line.Trim();
            if (trimmed.Length == 0 || trimmed.StartsWith('#') || trimmed.StartsWith("//", StringComparison.Ordinal)) continue;
            string result;
            try
            {
                var scenario = ScenarioJson.Parse(line, image);
                if (scenario.Access is null) throw new InputException("access is missing: each batch line walks one access");
                result = WalkJson.ToJson(engine(scenario), steps: false);
            }
            catch (InputException e)
            {
                failed++;
                result = WalkJson.Error($"line {lineNumber}: {e.Message}");
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or OutOfMemoryException)
            {
                failed++;
                result = WalkJson.Error($"line {lineNumber}: internal error: {e.GetType().Name}: {Messages.Of(e)}");
            }
            output.WriteLine(result);
        }
        output.Flush();
        return failed;
    }

    // The input is read as the batch goes, so a read error can come after some results are out.
    static string? ReadLine(TextReader input, int linesSoFar)
    {
        try { return input.ReadLine(); }
        catch (IOException e) { throw new InputException($"cannot read the batch input after line {linesSoFar}: {e.Message}"); }
    }
}
