using MmuSpec.Harness.Concurrency;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// `mmuspec stress` (docs/cli.md): the programs it draws and reshapes, and a short run of the executable.
/// Its bad input is in <see cref="BadInputTests"/>.
/// </summary>
public sealed class StressCommandTests
{
    [Fact]
    public void A_short_run_checks_every_round_and_exits_0()
    {
        var (exit, stdout, stderr) = MmuspecProcess.Run("stress", "--seed", "5", "--count", "2", "--rounds", "5", "--threads", "3");
        Assert.True(exit == 0, $"exit {exit}\nstdout: {stdout}\nstderr: {stderr}");
        Assert.StartsWith("mmuspec stress: seed 5, 3 threads, 5 rounds per program, at most 2 programs", stderr, StringComparison.Ordinal);
        Assert.Contains("stress: 2 programs, 10 rounds,", stdout, StringComparison.Ordinal);
        Assert.Contains("every history linearizable", stdout, StringComparison.Ordinal);
        Assert.Contains("rerun: mmuspec stress --seed 5 --threads 3 --rounds 5 --count 2", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void The_same_seed_draws_the_same_programs_with_the_threads_asked_for()
    {
        for (long i = 0; i < 20; i++)
        {
            var c = ConcurrentTdpStressCampaign.CaseAt(20261204, i, 3);
            Assert.Equal(c, ConcurrentTdpStressCampaign.CaseAt(20261204, i, 3));
            Assert.Equal(3, c.Program.Threads.Count);
            ConcurrentTdpCase.CheckRules(c, "");
        }
        Assert.NotEqual(ConcurrentTdpStressCampaign.CaseAt(1, 0, 2), ConcurrentTdpStressCampaign.CaseAt(2, 0, 2));
    }

    [Fact]
    public void Reshaping_repeats_a_drawn_thread_or_folds_extra_threads_into_the_others()
    {
        var c = ConcurrentTdpGen.Build(11, 50, new VmConfig(TdpFormat.Ept));
        var drawn = c.Program.Threads;
        var more = ConcurrentTdpStressCampaign.WithThreads(c, drawn.Count + 1);
        Assert.Equal(drawn[0], more.Program.Threads[drawn.Count]);
        Assert.True(drawn.Zip(more.Program.Threads).All(p => p.First.SequenceEqual(p.Second)));

        var fewer = ConcurrentTdpStressCampaign.WithThreads(more, 2);
        Assert.Equal(2, fewer.Program.Threads.Count);
        Assert.True(fewer.Program.Threads.All(t => t.Count <= ConcurrentTdpCase.MaxOpsPerThread));
        // The first two threads stay whole at the front; the others' ops follow them, none invented.
        for (int t = 0; t < 2; t++)
            Assert.Equal(more.Program.Threads[t], fewer.Program.Threads[t].Take(more.Program.Threads[t].Count));
        Assert.True(fewer.OpCount > more.Program.Threads[0].Count + more.Program.Threads[1].Count && fewer.OpCount <= more.OpCount);
    }
}
