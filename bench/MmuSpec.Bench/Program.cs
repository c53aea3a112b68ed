using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;

namespace MmuSpec.Bench;

/// <summary>
/// Entry point: BenchmarkDotNet's switcher, so every BDN option works
/// (e.g. <c>dotnet run -c Release --project bench/MmuSpec.Bench -- --filter '*'</c>).
/// <c>--quick</c> adds a short job (1 launch, 3 warmup, 10 measured iterations) and, when no other
/// argument is given, runs every benchmark. <c>--roots-workload</c> runs no benchmark: it prints the cached-root
/// workload's rebuild counts per root policy (<see cref="CachedRootWorkload.RunReport"/>). <c>--spread-workload</c>
/// runs no benchmark: it prints the process CPU time per read of <see cref="ShadowSpreadBenchmarks"/>' scenarios
/// (<see cref="ShadowSpreadBenchmarks.RunWorkloadReport"/>), a cross-check that does not need a quiet machine's wall clock.
/// <c>--fault-workload [GiB...]</c> does the same for <see cref="TdpFaultBenchmarks"/> (sizes 1, 4, 16; all by default).
/// </summary>
public static class Program
{
    public const string QuickFlag = "--quick";
    public const string RootsWorkloadFlag = "--roots-workload";
    public const string SpreadWorkloadFlag = "--spread-workload";
    public const string FaultWorkloadFlag = "--fault-workload";

    /// <summary>The job <c>--quick</c> runs: enough for a ratio on a noisy machine, a few minutes in all.</summary>
    public static Job QuickJob { get; } = Job.Default
        .WithId("Quick")
        .WithLaunchCount(1)
        .WithWarmupCount(3)
        .WithIterationCount(10);

    public static int Main(string[] args)
    {
        if (args.Contains(RootsWorkloadFlag))
            return CachedRootWorkload.RunReport(Console.Out);
        if (args.Contains(SpreadWorkloadFlag))
            return ShadowSpreadBenchmarks.RunWorkloadReport(Console.Out);
        if (args.Contains(FaultWorkloadFlag))
            return FaultWorkload(args.Where(a => a != FaultWorkloadFlag).ToArray());

        bool quick = args.Contains(QuickFlag);
        string[] rest = args.Where(a => a != QuickFlag).ToArray();

        IConfig config = DefaultConfig.Instance;
        if (quick)
        {
            config = config.AddJob(QuickJob);
            if (rest.Length == 0)
                rest = ["--filter", "*"];
        }

        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(rest, config);
        return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;
    }

    static int FaultWorkload(string[] sizes)
    {
        var gib = new List<int>();
        foreach (string size in sizes)
        {
            if (!int.TryParse(size, out int g) || g is not (1 or 4 or 16))
            {
                Console.Error.WriteLine($"mmuspec-bench: error: {FaultWorkloadFlag} takes sizes 1, 4 or 16 (GiB), not '{size}'");
                return 2;
            }
            gib.Add(g);
        }
        return TdpFaultBenchmarks.RunWorkloadReport(Console.Out, gib);
    }
}
