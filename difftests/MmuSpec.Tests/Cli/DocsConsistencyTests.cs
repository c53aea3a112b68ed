using System.CommandLine;
using System.CommandLine.Help;
using System.Reflection;
using System.Text.RegularExpressions;
using MmuSpec.Harness.Running;
using Xunit;
using CheckCommand = MmuSpec.Cli.Commands.CheckCommand;
using ExitCodes = MmuSpec.Cli.Cli;
using MmuSpecCommand = MmuSpec.Cli.MmuSpecCommand;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// The docs say what the code does: every mmuspec command line shown in README.md and docs/*.md names a command and
/// options the CLI's own option table has, every option is documented in docs/cli.md, and the numbers the docs give
/// (cases per property in `dotnet test`, the number of properties, the nightly shard count) are the code's.
/// Each failure names the doc line.
/// </summary>
public sealed partial class DocsConsistencyTests
{
    static readonly RootCommand Root = MmuSpecCommand.Create();

    /// <summary>Measurement records (dated runs of their own time), not descriptions of today's tool: not held to today's numbers.</summary>
    static readonly string[] Records = ["performance.md", "mutation-score.md"];

    static IEnumerable<string> DocFiles()
    {
        string root = WalkAndBatchTests.RepoRoot();
        yield return Path.Combine(root, "README.md");
        foreach (string f in Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order(StringComparer.Ordinal)) yield return f;
    }

    static string Name(string path) => Path.GetRelativePath(WalkAndBatchTests.RepoRoot(), path).Replace('\\', '/');

    /// <summary>A line of a doc, with continuation lines (ending in a backslash) joined; Fenced: inside a ``` block.</summary>
    internal sealed record DocLine(string File, int Number, string Text, bool Fenced)
    {
        public override string ToString() => $"{File}:{Number}";
    }

    internal static List<DocLine> Lines(string file, string text)
    {
        var result = new List<DocLine>();
        var raw = text.ReplaceLineEndings("\n").Split('\n');
        bool fenced = false;
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i].TrimStart().StartsWith("```", StringComparison.Ordinal))
            {
                fenced = !fenced;
                continue;
            }
            int start = i;
            string line = raw[i];
            while (fenced && line.EndsWith('\\') && i + 1 < raw.Length) line = line[..^1] + " " + raw[++i].Trim();
            result.Add(new DocLine(file, start + 1, line, fenced));
        }
        return result;
    }

    /// <summary>A command line a doc shows: the subcommand word and the option tokens after it.</summary>
    internal sealed record Invocation(DocLine Line, string Command, IReadOnlyList<string> Options, bool ExplicitCli);

    [GeneratedRegex(@"(?<![\w/.-])mmuspec[ ]+(?<cmd>[a-z][a-z0-9-]*)(?=$|[\s`')])")]
    private static partial Regex MmuspecWord();

    [GeneratedRegex(@"difftests/MmuSpec\.Cli\S*(?:\s+(?!--\s)\S+)*?\s+--\s+(?<cmd>[a-z][a-z0-9-]*)")]
    private static partial Regex DotnetRunWord();

    /// <summary>A shell comment, a redirection (`&lt; file`, `2&gt; /dev/null`; not a `&lt;placeholder&gt;`), `;`, `&amp;&amp;`, or the next command.</summary>
    [GeneratedRegex(@"\s#|\s\d?(?:<|>>?)(?=\s)|;|&&|\smmuspec\s|\bdotnet\s")]
    private static partial Regex CommandLineEnd();

    [GeneratedRegex(@"`[^`]*`")]
    private static partial Regex CodeSpan();

    [GeneratedRegex(@"(?<![\w-])--[a-z0-9][a-z0-9-]*")]
    private static partial Regex OptionToken();

    /// <summary>
    /// The command lines of one doc line: in a fenced block the whole line, elsewhere each `code span`. A shell comment,
    /// redirection or a `;`/`&&` ends the command line.
    /// </summary>
    internal static IEnumerable<Invocation> Invocations(DocLine line)
    {
        var segments = line.Fenced ? [line.Text] : CodeSpan().Matches(line.Text).Select(m => m.Value.Trim('`'));
        foreach (string segment in segments)
        {
            var hits = DotnetRunWord().Matches(segment).Select(m => (m.Groups["cmd"], true))
                .Concat(MmuspecWord().Matches(segment).Select(m => (m.Groups["cmd"], false)))
                .OrderBy(h => h.Item1.Index);
            foreach (var (cmd, explicitCli) in hits)
            {
                string rest = segment[(cmd.Index + cmd.Length)..];
                if (CommandLineEnd().Match(rest) is { Success: true } stop) rest = rest[..stop.Index];
                var options = OptionToken().Matches(rest).Select(m => m.Value).ToList();
                yield return new Invocation(line, cmd.Value, options, explicitCli);
            }
        }
    }

    static IEnumerable<string> NamesOf(Option o) => o.Aliases.Prepend(o.Name);

    /// <summary>What is wrong with the command lines of these docs (file name, text): each problem names its doc line.</summary>
    internal static List<string> CommandLineProblems(IEnumerable<(string File, string Text)> docs, out int checkedLines)
    {
        var commands = Root.Subcommands.ToDictionary(c => c.Name, StringComparer.Ordinal);
        var global = Root.Options.SelectMany(NamesOf).ToHashSet(StringComparer.Ordinal);
        var problems = new List<string>();
        checkedLines = 0;
        foreach (var (file, text) in docs)
        {
            var lines = Lines(file, text);
            for (int i = 0; i < lines.Count; i++)
            {
                foreach (var inv in Invocations(lines[i]))
                {
                    if (!commands.TryGetValue(inv.Command, out var command))
                    {
                        // "mmuspec reads format 1": prose; an unknown word followed by options is a command line that is wrong.
                        if (inv.ExplicitCli || inv.Options.Count > 0)
                            problems.Add($"{inv.Line}: 'mmuspec {inv.Command}': no such command (commands: {string.Join(", ", commands.Keys)})");
                        continue;
                    }
                    checkedLines++;
                    var known = command.Options.SelectMany(NamesOf).Concat(global).ToHashSet(StringComparer.Ordinal);
                    foreach (string option in inv.Options.Where(o => !known.Contains(o)))
                    {
                        // An example of bad input: the next line shows mmuspec rejecting exactly this option.
                        bool shownRejected = i + 1 < lines.Count && lines[i + 1].Text.Contains("mmuspec: error:", StringComparison.Ordinal)
                            && lines[i + 1].Text.Contains($"'{option}'", StringComparison.Ordinal);
                        if (!shownRejected)
                            problems.Add($"{inv.Line}: 'mmuspec {inv.Command} {option}': {inv.Command} has no option {option} (it has: {string.Join(" ", command.Options.Where(o => !o.Hidden).Select(o => o.Name))})");
                    }
                }
            }
        }
        return problems;
    }

    [Fact]
    public void Every_command_line_in_the_docs_names_a_command_and_options_that_exist()
    {
        var problems = CommandLineProblems(DocFiles().Select(f => (Name(f), File.ReadAllText(f))), out int checkedLines);
        Assert.True(checkedLines >= 50, $"expected the docs' many mmuspec command lines, found {checkedLines}: is the scan broken?");
        Assert.True(problems.Count == 0, "command lines in the docs that the CLI does not accept:\n" + string.Join("\n", problems));
    }

    [Fact]
    public void A_command_line_with_an_unknown_command_or_option_is_named_with_its_doc_line()
    {
        const string doc = """
            # Title
            Run `mmuspec check --seed 1 --no-such-flag` or:
            ```sh
            dotnet run --project difftests/MmuSpec.Cli -- chek --seed 1
            $ mmuspec walk --bogus
            mmuspec: error: Unrecognized command or argument '--bogus' (see 'mmuspec walk --help')
            mmuspec replay FILE --shrink --help   # fine
            ```
            """;
        var problems = CommandLineProblems([("x.md", doc)], out _);
        Assert.Equal(2, problems.Count);
        Assert.StartsWith("x.md:2: 'mmuspec check --no-such-flag': check has no option --no-such-flag", problems[0], StringComparison.Ordinal);
        Assert.StartsWith("x.md:4: 'mmuspec chek': no such command", problems[1], StringComparison.Ordinal);
    }

    /// <summary>The section of docs/cli.md on one command: from its "## command" heading to the next "## " heading.</summary>
    static string? Section(string doc, string command)
    {
        var m = Regex.Match(doc, $@"^## {Regex.Escape(command)}\b.*?(?=^## |\z)", RegexOptions.Multiline | RegexOptions.Singleline);
        return m.Success ? m.Value : null;
    }

    [Fact]
    public void Every_command_and_option_is_documented_in_cli_md()
    {
        string doc = File.ReadAllText(Path.Combine(WalkAndBatchTests.RepoRoot(), "docs", "cli.md"));
        string commandTable = Section(doc, "Exit codes") is { } ? doc[..doc.IndexOf("## Exit codes", StringComparison.Ordinal)] : doc;
        var problems = new List<string>();
        foreach (var command in Root.Subcommands)
        {
            if (!commandTable.Contains($"[`{command.Name}`](#", StringComparison.Ordinal))
                problems.Add($"docs/cli.md: the command table does not list `{command.Name}`");
            if (Section(doc, command.Name) is not { } section)
            {
                problems.Add($"docs/cli.md: no section '## {command.Name}'");
                continue;
            }
            foreach (var option in command.Options.Where(o => !o.Hidden && o is not HelpOption))
                foreach (string name in NamesOf(option))
                    if (!Regex.IsMatch(section, $@"(?<![\w-]){Regex.Escape(name)}(?![\w-])"))
                        problems.Add($"docs/cli.md, section '## {command.Name}': option {name} is not documented");
        }
        Assert.True(problems.Count == 0, "the CLI has commands or options docs/cli.md does not describe:\n" + string.Join("\n", problems));
    }

    [Fact]
    public void Every_exit_code_the_cli_defines_is_in_the_exit_code_table()
    {
        string doc = File.ReadAllText(Path.Combine(WalkAndBatchTests.RepoRoot(), "docs", "cli.md"));
        string table = Section(doc, "Exit codes") ?? throw new Xunit.Sdk.XunitException("docs/cli.md has no '## Exit codes' section");
        var documented = Regex.Matches(table, @"^\| (\d+) \|", RegexOptions.Multiline).Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToHashSet();
        var defined = typeof(ExitCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.IsLiteral && f.FieldType == typeof(int))
            .Select(f => ($"Cli.{f.Name}", (int)f.GetRawConstantValue()!))
            .Append(($"CheckCommand.{nameof(CheckCommand.CoverageIncomplete)}", CheckCommand.CoverageIncomplete))
            .Append(($"CheckCommand.{nameof(CheckCommand.Partial)}", CheckCommand.Partial))
            .Append(($"CheckCommand.{nameof(CheckCommand.Interrupted)}", CheckCommand.Interrupted))
            .ToList();
        Assert.True(defined.Count >= 5, "expected the CLI's exit-code constants");
        var missing = defined.Where(d => !documented.Contains(d.Item2)).Select(d => $"{d.Item1} = {d.Item2}").ToList();
        Assert.True(missing.Count == 0, $"docs/cli.md's exit-code table (codes {string.Join(", ", documented.Order())}) lacks: {string.Join(", ", missing)}");
    }

    /// <summary>Cases per property in a plain `dotnet test`, per family: each property's TestCases, which the differential test classes run.</summary>
    internal static Dictionary<string, int> DefaultCasesPerFamily()
    {
        var perFamily = DiffProperties.All.GroupBy(p => p.Family).ToDictionary(g => g.Key, g => g.Select(p => p.TestCases).ToHashSet(), StringComparer.Ordinal);
        foreach (var (family, set) in perFamily)
            Assert.True(set.Count == 1, $"the {family} properties run different case counts in dotnet test ({string.Join(", ", set)}): the docs' one number per family no longer holds");
        return perFamily.ToDictionary(kv => kv.Key, kv => kv.Value.Single(), StringComparer.Ordinal);
    }

    static readonly Dictionary<string, string> FamilyWord = new(StringComparer.OrdinalIgnoreCase)
    {
        ["walk"] = DiffProperties.WalkFamily, ["TDP"] = DiffProperties.TdpFamily, ["shadow"] = DiffProperties.ShadowFamily,
        ["concurrent"] = DiffProperties.ConcurrentTdpFamily, ["nested"] = DiffProperties.NestedEptFamily,
    };

    /// <summary>"1000 per walk property", "300 cases for TDP or shadow properties", "300 for TDP and shadow properties".</summary>
    [GeneratedRegex(@"(?<n>\d[\d,]*)\s+(?:cases\s+)?(?:per|for)\s+(?:each\s+)?(?<fam>walk|TDP|shadow|concurrent|nested)(?:(?:,|\s+or|\s+and)\s+(?<fam>walk|TDP|shadow|concurrent|nested))*\s+propert(?:y|ies)", RegexOptions.IgnoreCase)]
    private static partial Regex FamilyCases();

    /// <summary>"300 cases per property": one number for every property.</summary>
    [GeneratedRegex(@"(?<n>\d[\d,]*)\s+cases\s+(?:per|for each|for every)\s+(?:FsCheck\s+|differential\s+)?property", RegexOptions.IgnoreCase)]
    private static partial Regex UniformCases();

    [Fact]
    public void The_docs_give_the_cases_per_property_that_dotnet_test_runs()
    {
        var defaults = DefaultCasesPerFamily();
        var problems = new List<string>();
        int envRows = 0;
        foreach (string path in DocFiles().Where(f => !Records.Contains(Path.GetFileName(f))))
        {
            foreach (var line in Lines(Name(path), File.ReadAllText(path)))
            {
                bool aboutDotnetTest = line.Text.Contains("dotnet test", StringComparison.Ordinal) || line.Text.Contains(PropertyCheck.MaxTestVariable, StringComparison.Ordinal);
                if (!aboutDotnetTest) continue;
                var claimed = new HashSet<string>(StringComparer.Ordinal);
                foreach (Match m in FamilyCases().Matches(line.Text))
                {
                    int n = int.Parse(m.Groups["n"].Value.Replace(",", "", StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture);
                    foreach (Capture c in m.Groups["fam"].Captures)
                    {
                        string family = FamilyWord[c.Value];
                        claimed.Add(family);
                        if (defaults[family] != n)
                            problems.Add($"{line}: says {n} cases per {c.Value} property in dotnet test; the tests run {defaults[family]} ('{m.Value}')");
                    }
                }
                foreach (Match m in UniformCases().Matches(line.Text))
                    if (defaults.Values.Distinct().Count() > 1)
                        problems.Add($"{line}: '{m.Value}' in dotnet test, but the count differs by family ({string.Join(", ", defaults.Select(kv => $"{kv.Key} {kv.Value}"))})");
                // The environment tables' MMUSPEC_MAX_TEST row must give every family's default.
                if (line.Text.StartsWith($"| `{PropertyCheck.MaxTestVariable}`", StringComparison.Ordinal))
                {
                    envRows++;
                    foreach (string family in defaults.Keys.Where(f => !claimed.Contains(f)))
                        problems.Add($"{line}: the {PropertyCheck.MaxTestVariable} row does not give the default for the {family} properties ({defaults[family]})");
                }
            }
        }
        Assert.True(envRows >= 2, $"expected the {PropertyCheck.MaxTestVariable} rows of README.md's and docs/cli.md's environment tables, found {envRows}");
        Assert.True(problems.Count == 0, "the docs' case counts disagree with the properties' TestCases:\n" + string.Join("\n", problems));
    }

    static readonly string[] NumberWords = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"];

    static int? NumberOf(string text) =>
        int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out int n) ? n
        : Array.FindIndex(NumberWords, w => w.Equals(text, StringComparison.OrdinalIgnoreCase)) is var i and >= 0 ? i : null;

    const string NumberPattern = @"(?<n>\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty)";

    /// <summary>"all ten properties", "the 18 properties", "mod 18", "prime to 18": the number of differential properties.</summary>
    [GeneratedRegex(@"\b(?:(?:all|the|every one of the|over)\s+" + NumberPattern + @"\s+(?:differential\s+)?properties|(?:mod|prime to(?: the)?)\s+" + NumberPattern + @")\b", RegexOptions.IgnoreCase)]
    private static partial Regex PropertyCount();

    /// <summary>"5 guest-walk, 5 TDP and 8 shadow properties".</summary>
    [GeneratedRegex(@"(?<w>\d+) guest-walk, (?<t>\d+) TDP and (?<s>\d+) shadow properties")]
    private static partial Regex FamilyCounts();

    /// <summary>"over four shards", "a matrix of 5 shards", "Five shards": the nightly deep tier's shard count.</summary>
    [GeneratedRegex(@"\b" + NumberPattern + @"\s+shards\b", RegexOptions.IgnoreCase)]
    private static partial Regex ShardCount();

    [Fact]
    public void The_docs_give_the_number_of_properties_and_the_nightly_shard_count()
    {
        int properties = DiffProperties.All.Count;
        string workflow = File.ReadAllText(Path.Combine(WalkAndBatchTests.RepoRoot(), ".github", "workflows", "ci.yml"));
        var matrix = Regex.Match(workflow, @"^\s*shard:\s*\[(?<list>[\d,\s]+)\]", RegexOptions.Multiline);
        Assert.True(matrix.Success, ".github/workflows/ci.yml: no 'shard: [...]' matrix found");
        int shards = matrix.Groups["list"].Value.Split(',', StringSplitOptions.RemoveEmptyEntries).Length;

        var problems = new List<string>();
        foreach (string path in DocFiles().Where(f => !Records.Contains(Path.GetFileName(f))))
        {
            foreach (var line in Lines(Name(path), File.ReadAllText(path)))
            {
                foreach (Match m in PropertyCount().Matches(line.Text))
                {
                    if (NumberOf(m.Groups["n"].Value) is { } n && n != properties)
                        problems.Add($"{line}: '{m.Value}': there are {properties} differential properties (DiffProperties.All)");
                }
                foreach (Match m in FamilyCounts().Matches(line.Text))
                {
                    var counts = new[] { (DiffProperties.Walks.Count, "w"), (DiffProperties.TdpMmus.Count, "t"), (DiffProperties.ShadowMmus.Count, "s") };
                    if (counts.Any(c => int.Parse(m.Groups[c.Item2].Value, System.Globalization.CultureInfo.InvariantCulture) != c.Item1))
                        problems.Add($"{line}: '{m.Value}': the code has {DiffProperties.Walks.Count} guest-walk, {DiffProperties.TdpMmus.Count} TDP and {DiffProperties.ShadowMmus.Count} shadow properties");
                }
                foreach (Match m in ShardCount().Matches(line.Text))
                    if (NumberOf(m.Groups["n"].Value) is { } n && n != shards)
                        problems.Add($"{line}: '{m.Value}': the nightly deep tier in .github/workflows/ci.yml runs {shards} shards");
            }
        }
        Assert.True(problems.Count == 0, "the docs' counts disagree with the code and the CI workflow:\n" + string.Join("\n", problems));
    }

    [Fact]
    public void The_scanner_finds_command_lines_in_blocks_and_code_spans_only()
    {
        var lines = Lines("x.md", "run `mmuspec check --deep` or mmuspec walk --bogus in prose\n```sh\ndotnet run --project difftests/MmuSpec.Cli --no-build -- check --time 60 \\\n   --seed 1 # --comment\n"
            + "mmuspec replay <seed,gamma,size> --property p > out.txt --not-mmuspec\nmmuspec walk --batch < in.jsonl --x\n```\n");
        var found = lines.SelectMany(Invocations).Select(i => $"{i.Line.Number}:{i.Command}:{string.Join(",", i.Options)}").ToList();
        Assert.Equal(["1:check:--deep", "3:check:--time,--seed", "5:replay:--property", "6:walk:--batch"], found);
    }

    /// <summary>"`PageWalk.FoldRights`": a type of the project and one of its members, inside a code span.</summary>
    [GeneratedRegex(@"\b(?<type>[A-Z][A-Za-z0-9]+)\.(?<member>[A-Z][A-Za-z0-9]*)\b")]
    private static partial Regex TypeMember();

    [GeneratedRegex(@"\b[A-Za-z][A-Za-z0-9_-]*\.md\b")]
    private static partial Regex MarkdownFile();

    /// <summary>Right after a Type.Member match: the extension that makes it a source file name.</summary>
    [GeneratedRegex(@"\G\.(cs|fs|fsx)\b")]
    private static partial Regex SourceExtension();

    static HashSet<string> SourceFileNames(string root) =>
        new[] { "*.cs", "*.fs", "*.fsx" }.SelectMany(p => Directory.EnumerateFiles(root, p, SearchOption.AllDirectories))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Select(f => Path.GetFileName(f)).ToHashSet(StringComparer.Ordinal);

    [Fact]
    public void Every_type_member_and_doc_file_the_docs_name_exists()
    {
        var assemblies = new[]
        {
            typeof(MmuSpec.Spec.Paging.PageWalk).Assembly, typeof(MmuSpec.Impl.Memory.NativePagePool).Assembly,
            typeof(DiffProperties).Assembly, typeof(MmuSpecCommand).Assembly, typeof(DocsConsistencyTests).Assembly,
        };
        var types = assemblies.SelectMany(a => a.GetTypes()).Where(t => !t.IsDefined(typeof(System.Runtime.CompilerServices.CompilerGeneratedAttribute)))
            .GroupBy(t => t.Name.Split('`')[0], StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.ToList(), StringComparer.Ordinal);
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance;
        string root = WalkAndBatchTests.RepoRoot();
        var files = Directory.EnumerateFiles(root, "*.md", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Select(Path.GetFileName).ToHashSet(StringComparer.Ordinal);
        var sources = SourceFileNames(root);
        var problems = new List<string>();
        int named = 0;
        foreach (string path in DocFiles().Where(f => !Records.Contains(Path.GetFileName(f))))
        {
            foreach (var line in Lines(Name(path), File.ReadAllText(path)))
            {
                foreach (Match span in CodeSpan().Matches(line.Text))
                    foreach (Match m in TypeMember().Matches(span.Value))
                    {
                        // "`ShadowState.Roots.cs`": a file of a partial type, not a member; it must exist.
                        if (SourceExtension().Match(span.Value, m.Index + m.Length) is { Success: true } ext)
                        {
                            if (!sources.Contains(m.Value + ext.Value)) problems.Add($"{line}: {m.Value + ext.Value} is not in the repository");
                            continue;
                        }
                        // Only the project's own types: FsCheck's Config.Quick or a namespace like MmuSpec.Cli are not checked.
                        if (!types.TryGetValue(m.Groups["type"].Value, out var candidates)) continue;
                        named++;
                        string member = m.Groups["member"].Value;
                        if (!candidates.Any(t => t.GetMember(member, all).Length > 0 || t.GetNestedType(member, all) is not null))
                            problems.Add($"{line}: `{m.Value}`: {m.Groups["type"].Value} has no member {member}");
                    }
                foreach (Match m in MarkdownFile().Matches(line.Text))
                    if (!files.Contains(m.Value))
                        problems.Add($"{line}: {m.Value} is not in the repository");
            }
        }
        Assert.True(named >= 30, $"expected the docs to name many members of the project's types, found {named}: is the scan broken?");
        Assert.True(problems.Count == 0, "the docs name code or files that do not exist:\n" + string.Join("\n", problems));
    }

    /// <summary>"seed 001", "seeds 000 and 004", also across a line break: the old shorthand for the ideas of docs/glossary.md.</summary>
    [GeneratedRegex(@"\bseeds?[\s/*#]*0{2}[0-4]\b", RegexOptions.IgnoreCase)]
    private static partial Regex SeedShorthand();

    [Fact]
    public void Code_and_docs_name_the_design_ideas_not_seed_numbers()
    {
        string root = WalkAndBatchTests.RepoRoot();
        string[] skip = [".git", "bin", "obj", "StrykerOutput", "BenchmarkDotNet.Artifacts"];
        var problems = new List<string>();
        var pending = new Stack<string>([root]);
        while (pending.Count > 0)
        {
            string dir = pending.Pop();
            foreach (string d in Directory.GetDirectories(dir).Where(d => !skip.Contains(Path.GetFileName(d)))) pending.Push(d);
            foreach (string f in Directory.GetFiles(dir).Where(f => Path.GetExtension(f) is ".cs" or ".fs" or ".fsx" or ".md" or ".yml" or ".patch"))
            {
                if (f == Path.Combine(root, "difftests", "MmuSpec.Tests", "Cli", "DocsConsistencyTests.cs")) continue;
                string text = File.ReadAllText(f);
                foreach (Match m in SeedShorthand().Matches(text))
                    problems.Add($"{Name(f)}:{text.Take(m.Index).Count(c => c == '\n') + 1}: '{m.Value.ReplaceLineEndings(" ")}': name the idea and its source instead (docs/glossary.md, \"Where the ideas come from\")");
            }
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }
}
