using System.Diagnostics;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Mutants;
using Xunit;

namespace MmuSpec.Tests.Mutants;

/// <summary>
/// The historical-bug catalog stays alive: every entry parses, names real properties, and its patch
/// still applies to impl/ as it is now. (Whether each bug is caught is `mmuspec mutants`' job: it
/// builds every mutant, which is too slow for the quick tier.)
/// </summary>
public sealed class BugCatalogTests
{
    static string Root =>
        FindRoot(AppContext.BaseDirectory) ?? throw new InvalidOperationException("no MmuSpec.sln above the test binaries");

    static string? FindRoot(string start)
    {
        for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "MmuSpec.sln"))) return d.FullName;
        return null;
    }

    [Fact]
    public void The_catalog_has_at_least_twelve_bugs_with_unique_names_and_upstream_titles()
    {
        var entries = MutantCatalog.Load(Root);
        Assert.True(entries.Count >= 12, $"the catalog has {entries.Count} entries; issue 6 asks for at least 12");
        Assert.Equal(entries.Count, entries.Select(e => e.Name).Distinct().Count());
        Assert.Equal(entries.Count, entries.Select(e => e.Upstream).Distinct().Count());
        Assert.All(entries, e => Assert.NotEmpty(e.Properties));
    }

    [Fact]
    public void Every_patch_still_applies_to_impl()
    {
        foreach (var e in MutantCatalog.Load(Root))
        {
            var git = new ProcessStartInfo("git") { WorkingDirectory = Root, RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string a in new[] { "apply", "--check", e.Path }) git.ArgumentList.Add(a);
            using var p = Process.Start(git) ?? throw new InvalidOperationException("cannot start git");
            string error = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"{e.Name}: the patch no longer applies to impl/ (update it to make the same mistake in the new code): {error}");
        }
    }

    const string Diff = "diff --git a/impl/X.cs b/impl/X.cs\n--- a/impl/X.cs\n+++ b/impl/X.cs\n@@ -1 +1 @@\n-a\n+b\n";
    const string Header = "Title: t\nUpstream: KVM: fix\nCommit: abc\nCause: c\nProperties: shadow-32bit\n\n";

    [Fact]
    public void An_entry_parses_its_header_and_the_files_its_patch_changes()
    {
        var e = MutantCatalog.Parse("01-x", Header.Replace("Cause: c", "Cause: first line\n  continued") + Diff);
        Assert.Equal("KVM: fix", e.Upstream);
        Assert.Equal("first line continued", e.Cause);
        Assert.Equal(new[] { "shadow-32bit" }, e.Properties.ToArray());
        Assert.Equal(new[] { "impl/X.cs" }, e.Files.ToArray());
        Assert.StartsWith("diff --git", e.Patch, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Title: t\nUpstream: u\nCommit: c\nProperties: shadow-32bit\n\n", "'Cause' is missing")]
    [InlineData("Title: t\nUpstream: u\nCommit: c\nCause: c\nProperties: shadow-32bit\nSeverity: high\n\n", "unknown header key 'Severity'")]
    [InlineData("Title: t\nUpstream: u\nCommit: c\nCause: c\nProperties: shadow-33bit\n\n", "unknown property 'shadow-33bit'")]
    [InlineData("Title: t\nTitle: u\n\n", "'Title' appears twice")]
    public void A_bad_header_is_an_error_naming_the_problem(string header, string expected)
    {
        var e = Assert.Throws<InputException>(() => MutantCatalog.Parse("bad", header + Diff));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_patch_outside_impl_or_without_a_diff_is_rejected()
    {
        var spec = Assert.Throws<InputException>(() => MutantCatalog.Parse("bad", Header + Diff.Replace("impl/", "spec/")));
        Assert.Contains("impl/ only", spec.Message, StringComparison.Ordinal);
        var none = Assert.Throws<InputException>(() => MutantCatalog.Parse("bad", Header));
        Assert.Contains("no 'diff --git' line", none.Message, StringComparison.Ordinal);
    }
}
