using System.Collections.Immutable;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MmuSpec.Harness.Images;

namespace MmuSpec.Harness.Running;

/// <summary>The first divergence as the failing run's report saw it (the case rerun on spec and impl when the file was written).</summary>
/// <param name="Step">1-based, as printed; null for a divergence outside the operations (at boot, when the VM was destroyed).</param>
/// <param name="Op">The operation's text, null with <paramref name="Step"/>.</param>
/// <param name="Message">One line: "first divergence: step 7: ..." or what else went wrong.</param>
public sealed record RecordedDivergence(int? Step, string? Op, string Spec, string Impl, ImmutableArray<string> StateDifferences, string Message)
{
    public static RecordedDivergence From(Divergence d, string whenNoStep, int steps)
    {
        bool inSteps = d.Step >= 0 && d.Step < steps;
        string message = inSteps ? $"first divergence: step {d.Step + 1}: {d.Op}"
            : d.Step < 0 ? $"first divergence: {whenNoStep}" : $"first divergence: after the last step, {d.Op}";
        return new RecordedDivergence(inSteps ? d.Step + 1 : null, inSteps ? d.Op?.ToString() : null,
            d.SpecResult, d.ImplResult, d.StateDifferences, message);
    }
}

/// <summary>
/// A counterexample as a file records it (docs/counterexample-format.md): the property, the
/// (shrunk) case, where it came from and what built the code that found it.
/// </summary>
/// <param name="Ops">The case's operation count as <see cref="DiffProperty.OpCount"/> gives it when the file was written (informational).</param>
/// <param name="ReplayToken">"seed,gamma,size" of the unshrunk case, when known.</param>
/// <param name="Seed">The <c>mmuspec check</c> campaign's master seed, when the case came from a campaign.</param>
/// <param name="Batch">The campaign batch, likewise.</param>
/// <param name="Divergence">Null when the rerun found no divergence (a failure of a custom predicate, or an exception the runner caught).</param>
/// <param name="Exception">The exception the property threw, when it threw rather than returned false.</param>
public sealed record Counterexample(
    DiffProperty Property, string Law, object Case, int Ops, string? ReplayToken, ulong? Seed, long? Batch,
    BuildVersions Versions, DateTimeOffset Created, RecordedDivergence? Divergence, string? Exception);

/// <summary>
/// Writes and reads counterexample files. A failing property writes one (see <see cref="PropertyCheck"/>);
/// <c>mmuspec replay FILE</c> reads it back. Reading is strict and every problem is an
/// <see cref="InputException"/> naming the field.
/// </summary>
public static class CounterexampleFile
{
    public const int Format = 1;

    /// <summary>Where failures write their counterexample files; "off" writes none.</summary>
    public const string DirectoryVariable = "MMUSPEC_COUNTEREXAMPLES";

    static readonly string[] TopFields =
        ["format", "property", "law", "ops", "replay_token", "seed", "batch", "versions", "created", "divergence", "exception", "case"];

    /// <summary>The directory for <paramref name="variable"/>'s value: the value itself, null for "off", the default when unset.</summary>
    public static string? DirectoryFor(string? variable) => variable?.Trim() switch
    {
        null or "" => Path.Combine(Path.GetTempPath(), "mmuspec-counterexamples"),
        var v when v.Equals("off", StringComparison.OrdinalIgnoreCase) => null,
        var v => v,
    };

    /// <summary>The directory named by $MMUSPEC_COUNTEREXAMPLES (see <see cref="DirectoryFor"/>).</summary>
    public static string? DefaultDirectory() => DirectoryFor(Environment.GetEnvironmentVariable(DirectoryVariable));

    /// <summary>
    /// A counterexample for <paramref name="c"/>, its divergence found by rerunning it now. A rerun that
    /// throws is recorded as the exception (when none was given), so the case is written all the same.
    /// </summary>
    public static Counterexample Create(DiffProperty property, object c, string? replayToken = null, ulong? seed = null, long? batch = null,
        string? exception = null)
    {
        // A concurrent case keeps the schedule that failed, so its rerun is that schedule (a rerun that throws keeps the case as it is).
        try { c = Families.For(c).Recorded(c); }
        catch (Exception e) { exception ??= $"{e.GetType().Name}: {e.Message}"; }
        Divergence? divergence = null;
        string whenNoStep = "";
        try { (divergence, _, whenNoStep) = CaseRuns.Run(c); }
        catch (Exception e) { exception ??= $"{e.GetType().Name}: {e.Message}"; }
        return new Counterexample(property, property.Law, c, property.OpCount(c), replayToken, seed, batch, BuildVersions.Current,
            DateTimeOffset.UtcNow, divergence is null ? null : RecordedDivergence.From(divergence, whenNoStep, CaseRuns.Steps(c)), exception);
    }

    // ---- writing ----

    public static string ToJson(Counterexample x)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WalkJson.WriterOptions(indented: true)))
        {
            w.WriteStartObject();
            w.WriteNumber("format", Format);
            w.WriteString("property", x.Property.Name);
            w.WriteString("law", x.Law);
            w.WriteNumber("ops", x.Ops);
            w.WriteString("replay_token", x.ReplayToken);
            if (x.Seed is { } seed) w.WriteString("seed", seed.ToString(CultureInfo.InvariantCulture)); else w.WriteNull("seed");
            if (x.Batch is { } batch) w.WriteNumber("batch", batch); else w.WriteNull("batch");
            w.WriteStartObject("versions");
            w.WriteString("mmuspec", x.Versions.Mmuspec);
            w.WriteString("commit", x.Versions.Commit);
            w.WriteString("sdk", x.Versions.Sdk);
            w.WriteString("runtime", x.Versions.Runtime);
            w.WriteString("os", x.Versions.Os);
            w.WriteEndObject();
            w.WriteString("created", x.Created.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            if (x.Divergence is { } d)
            {
                w.WriteStartObject("divergence");
                if (d.Step is { } step) w.WriteNumber("step", step); else w.WriteNull("step");
                w.WriteString("op", d.Op);
                w.WriteString("spec", d.Spec);
                w.WriteString("impl", d.Impl);
                w.WriteStartArray("state_differences");
                foreach (var line in d.StateDifferences) w.WriteStringValue(line);
                w.WriteEndArray();
                w.WriteString("message", d.Message);
                w.WriteEndObject();
            }
            else w.WriteNull("divergence");
            w.WriteString("exception", x.Exception);
            w.WritePropertyName("case");
            CaseJson.Write(w, x.Case);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <summary>"&lt;property&gt;-&lt;yyyyMMdd-HHmmss&gt;-&lt;hash&gt;.json": the creation time (UTC) and 8 hex digits of the case's SHA-256.</summary>
    public static string FileName(Counterexample x)
    {
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes(CaseJson.ToJson(x.Case)));
        return $"{x.Property.Name}-{x.Created.UtcDateTime.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}-{Convert.ToHexStringLower(hash, 0, 4)}.json";
    }

    /// <summary>Writes the file into <paramref name="directory"/> (created if missing) and returns its path.</summary>
    public static string Save(Counterexample x, string directory)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, FileName(x));
        WriteTo(x, path);
        return path;
    }

    /// <summary>
    /// Writes the file at <paramref name="path"/>: first to a temporary file beside it, so a reader never
    /// sees half a file. A failure (a full disk, <paramref name="path"/> a directory) removes the
    /// temporary file again and rethrows.
    /// </summary>
    public static void WriteTo(Counterexample x, string path)
    {
        if (Directory.Exists(path)) throw new IOException($"'{path}' is a directory, not a file name");
        string temporary = path + ".tmp";
        try
        {
            File.WriteAllText(temporary, ToJson(x));
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // the first error is the one to report
            throw;
        }
    }

    /// <summary>
    /// Where <c>replay FILE --shrink</c> writes: --out's path, or into --out when it is a directory (under the default
    /// name), else FILE.shrunk.json. Checked before anything runs: a directory that is not there is
    /// bad input, found before minutes of shrinking.
    /// </summary>
    public static string ShrinkTarget(string path, string? outPath)
    {
        string target = outPath is null ? ShrunkPath(path)
            : Directory.Exists(outPath) ? Path.Combine(outPath, Path.GetFileName(ShrunkPath(path))) : outPath;
        string? directory = Path.GetDirectoryName(Path.GetFullPath(target));
        if (directory is not null && !Directory.Exists(directory))
            throw new InputException($"cannot write the shrunk case to '{target}': directory '{directory}' does not exist");
        return target;
    }

    /// <summary>FILE.json -> FILE.shrunk.json (any other name gets .shrunk.json appended).</summary>
    public static string ShrunkPath(string path) =>
        path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? path[..^".json".Length] + ".shrunk.json" : path + ".shrunk.json";

    // ---- reading ----

    /// <summary>Reads a counterexample file; problems are <see cref="InputException"/>s starting with the path.</summary>
    public static Counterexample Load(string path)
    {
        string json;
        try { json = File.ReadAllText(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new InputException($"counterexample file '{path}' does not exist");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"counterexample file '{path}' cannot be read: {e.Message}");
        }
        try { return Parse(json); }
        catch (InputException e) { throw e.At(path); }
    }

    public static Counterexample Parse(string json)
    {
        using var doc = ScenarioJson.ParseDocument(json);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new InputException($"a counterexample file is a JSON object, not {StrictObject.Kind(root)}");
        // The format first: a newer file's fields would otherwise be reported as unknown.
        if (!root.TryGetProperty("format", out var format))
            throw new InputException("format is missing: this is not an mmuspec counterexample file (docs/counterexample-format.md)");
        if (format.ValueKind != JsonValueKind.Number || !format.TryGetInt32(out int version))
            throw new InputException($"format: expected the number {Format}, got {StrictObject.Kind(format)}");
        if (version != Format)
            throw new InputException($"format: this file has format {version}; this mmuspec reads format {Format} (docs/counterexample-format.md)");

        var o = StrictObject.Open(root, "", "a counterexample object", TopFields);
        string name = o.String("property");
        DiffProperty property;
        try { property = DiffProperties.Find(name); }
        catch (ArgumentException e) { throw new InputException($"property: {e.Message}"); }
        string law = o.String("law");
        int ops = o.Int("ops");
        if (ops < 0) throw new InputException($"ops: {ops} is negative");
        string? token = o.NullableString("replay_token");
        if (token is not null)
        {
            try { PropertyCheck.ParseReplay(token); }
            catch (FormatException e) { throw new InputException($"replay_token: {e.Message}"); }
        }
        ulong? seed = o.NullableDecimalString("seed");
        long? batch = o.NullableLong("batch");
        var v = o.Object("versions", "an object with mmuspec, commit, sdk, runtime and os", "mmuspec", "commit", "sdk", "runtime", "os");
        var versions = new BuildVersions(v.String("mmuspec"), v.String("commit"), v.String("sdk"), v.String("runtime"), v.String("os"));
        string created = o.String("created");
        if (!DateTimeOffset.TryParse(created, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var when))
            throw new InputException($"created: '{created}' is not a time like \"2025-01-31T12:00:00Z\"");
        RecordedDivergence? divergence = o.IsNull("divergence") ? null : ReadDivergence(o.Object("divergence",
            "an object with step, op, spec, impl, state_differences and message", "step", "op", "spec", "impl", "state_differences", "message"));
        string? exception = o.NullableString("exception");

        object c = CaseJson.Read(o.Field("case"), "case");
        var expected = property.CaseType;
        if (c.GetType() != expected)
            throw new InputException($"case.kind: property {property.Name} runs {CaseJson.KindOf(expected)} cases, not {CaseJson.KindOf(c)} cases");
        return new Counterexample(property, law, c, ops, token, seed, batch, versions, when, divergence, exception);
    }

    static RecordedDivergence ReadDivergence(StrictObject d)
    {
        int? step = d.NullableInt("step");
        if (step is < 1) throw new InputException($"{d.At("step")}: steps count from 1, got {step}");
        var lines = d.Array("state_differences").Select(e => e.Element.ValueKind == JsonValueKind.String ? e.Element.GetString()!
            : throw new InputException($"{e.Path}: expected a string, got {StrictObject.Kind(e.Element)}")).ToImmutableArray();
        return new RecordedDivergence(step, d.NullableString("op"), d.String("spec"), d.String("impl"), lines, d.String("message"));
    }
}
