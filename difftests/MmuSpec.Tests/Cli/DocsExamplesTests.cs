using System.Text.RegularExpressions;
using MmuSpec.Harness.Images;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>Every scenario shown in docs/json-format.md (code blocks marked "json scenario") parses and walks on both engines alike.</summary>
public sealed partial class DocsExamplesTests
{
    [GeneratedRegex("```json scenario\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ScenarioBlock();

    [Fact]
    public void Every_scenario_in_the_json_format_doc_parses_and_walks()
    {
        string doc = File.ReadAllText(Path.Combine(WalkAndBatchTests.RepoRoot(), "docs", "json-format.md"));
        var blocks = ScenarioBlock().Matches(doc).Select(m => m.Groups[1].Value).ToList();
        Assert.True(blocks.Count >= 5, $"expected the doc's scenario examples, found {blocks.Count}");
        foreach (var json in blocks)
        {
            var s = ScenarioJson.Parse(json);
            var spec = SpecWalk.Run(s);
            var impl = ImplWalk.Run(s);
            Assert.Equal(spec.Result, impl.Result);
            Assert.Equal(spec.Changes.ToList(), impl.Changes.ToList());
        }
    }
}
