using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;

namespace MmuSpec.Bench;

/// <summary>The config every impl-vs-spec benchmark uses: Ratio shown as "Nx faster" rather than a 0.01-resolution fraction.</summary>
internal sealed class RatioAsTrendConfig : ManualConfig
{
    public RatioAsTrendConfig() => SummaryStyle = SummaryStyle.Default.WithRatioStyle(BenchmarkDotNet.Columns.RatioStyle.Trend);
}
