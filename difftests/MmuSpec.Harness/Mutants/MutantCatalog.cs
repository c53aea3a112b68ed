using System.Collections.Immutable;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;

namespace MmuSpec.Harness.Mutants;

/// <summary>
/// One entry of the historical-bug catalog (difftests/mutants/*.patch, docs/bug-catalog.md): a real
/// KVM MMU bug, and a patch against impl/ that makes the same mistake. The file is a header of
/// "Key: value" lines followed by a unified diff that <c>git apply</c> takes (it skips the header).
/// </summary>
/// <param name="Name">The file name without ".patch", e.g. "01-direct-gfn-without-quadrant".</param>
/// <param name="Title">The mistake in our words, one line.</param>
/// <param name="Upstream">The title of the upstream commit that fixed the bug in KVM.</param>
/// <param name="Commit">Its hash, author and year as far as they were verified ("not verified" otherwise).</param>
/// <param name="Cause">The root cause in one sentence.</param>
/// <param name="Properties">The differential properties the campaign runs for this bug (its area of the model).</param>
/// <param name="Patch">The diff itself, from the first "diff --git" line.</param>
public sealed record MutantEntry(
    string Name, string Title, string Upstream, string Commit, string Cause,
    ImmutableArray<string> Properties, string Patch, string Path)
{
    /// <summary>The files the patch changes (from its "+++ b/..." lines).</summary>
    public IEnumerable<string> Files =>
        Patch.Split('\n').Where(l => l.StartsWith("+++ b/", StringComparison.Ordinal)).Select(l => l[6..].TrimEnd('\r'));

    /// <summary>
    /// A concurrency mutant: the campaign runs it on a Debug build, where freed table pages are poisoned
    /// (impl/Tdp/TdpPageAllocator.cs), so a walk that reads one answers wrongly instead of reading a hole.
    /// </summary>
    public bool Debug => Name.StartsWith(MutantCatalog.ConcurrencyDirectory + "/", StringComparison.Ordinal);
}

public static class MutantCatalog
{
    /// <summary>Where the catalog lives, relative to the repository root.</summary>
    public const string Directory = "difftests/mutants";

    static readonly string[] Required = ["Title", "Upstream", "Commit", "Cause", "Properties"];

    /// <summary>
    /// The concurrency mutants' subdirectory: bugs of the concurrent TDP MMU, caught by the `tdp-concurrent`
    /// property; their names start with "concurrency/". The campaign runs them on a Debug build (<see cref="MutantEntry.Debug"/>).
    /// </summary>
    public const string ConcurrencyDirectory = "concurrency";

    /// <summary>Every entry of the catalog under <paramref name="repositoryRoot"/>: the sequential ones in file-name order, then the concurrency ones.</summary>
    public static IReadOnlyList<MutantEntry> Load(string repositoryRoot)
    {
        string dir = System.IO.Path.Combine(repositoryRoot, Directory);
        if (!System.IO.Directory.Exists(dir))
            throw new InputException($"no bug catalog at {dir}");
        string concurrency = System.IO.Path.Combine(dir, ConcurrencyDirectory);
        var nested = System.IO.Directory.Exists(concurrency) ? System.IO.Directory.GetFiles(concurrency, "*.patch") : [];
        return System.IO.Directory.GetFiles(dir, "*.patch").Order(StringComparer.Ordinal)
            .Select(f => Parse(System.IO.Path.GetFileNameWithoutExtension(f), File.ReadAllText(f), f))
            .Concat(nested.Order(StringComparer.Ordinal)
                .Select(f => Parse($"{ConcurrencyDirectory}/{System.IO.Path.GetFileNameWithoutExtension(f)}", File.ReadAllText(f), f)))
            .ToList();
    }

    /// <summary>
    /// Parses one catalog file. Strict: a missing or unknown header key, a property that does not
    /// exist, or a file without a diff is an <see cref="InputException"/> naming the file.
    /// </summary>
    public static MutantEntry Parse(string name, string text, string path = "")
    {
        string where = path.Length > 0 ? path : name;
        int diffAt = text.StartsWith("diff --git ", StringComparison.Ordinal) ? 0 : text.IndexOf("\ndiff --git ", StringComparison.Ordinal) + 1;
        if (diffAt <= 0 && !text.StartsWith("diff --git ", StringComparison.Ordinal))
            throw new InputException($"{where}: no 'diff --git' line: a catalog entry is a header followed by a patch against impl/");

        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        string? last = null;
        foreach (string raw in text[..diffAt].Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.Length == 0) { last = null; continue; }
            if (char.IsWhiteSpace(line[0]) && last is not null)
            {
                fields[last] += " " + line.Trim();   // a continuation line
                continue;
            }
            int colon = line.IndexOf(':');
            if (colon <= 0) throw new InputException($"{where}: header line '{line}' is not 'Key: value'");
            string key = line[..colon].Trim();
            if (!Required.Contains(key))
                throw new InputException($"{where}: unknown header key '{key}' (expected {string.Join(", ", Required)})");
            if (!fields.TryAdd(key, line[(colon + 1)..].Trim()))
                throw new InputException($"{where}: header key '{key}' appears twice");
            last = key;
        }
        foreach (string key in Required)
            if (!fields.TryGetValue(key, out string? v) || v.Length == 0)
                throw new InputException($"{where}: header key '{key}' is missing");

        var properties = fields["Properties"].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToImmutableArray();
        foreach (string p in properties)
            if (!DiffProperties.All.Any(x => x.Name == p))
                throw new InputException($"{where}: unknown property '{p}' (known: {string.Join(", ", DiffProperties.All.Select(x => x.Name))})");

        var entry = new MutantEntry(name, fields["Title"], fields["Upstream"], fields["Commit"], fields["Cause"], properties, text[diffAt..], path);
        foreach (string file in entry.Files)
            if (!file.StartsWith("impl/", StringComparison.Ordinal))
                throw new InputException($"{where}: the patch changes {file}; a catalog patch changes impl/ only (the spec is the reference it is caught against)");
        if (!entry.Files.Any())
            throw new InputException($"{where}: the patch changes no file");
        return entry;
    }
}
