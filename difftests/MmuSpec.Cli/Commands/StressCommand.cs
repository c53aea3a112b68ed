using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Harness.Running;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec stress</c>: the bounded real-thread stress campaign of the concurrent TDP MMU (docs/cli.md,
/// docs/concurrency-testing.md). Programs drawn from <c>--seed</c> as `tdp-concurrent` draws them, with
/// <c>--threads</c> threads, each run for <c>--rounds</c> rounds on the production build of the MMU (no
/// scheduler: threads released together), every round's history checked for linearizability against the spec.
/// Exit codes as <c>check</c>: 0 every history linearizable, 1 one was not (printed, and the program written as a
/// counterexample file), 2 bad input, 130 interrupted.
/// </summary>
public static class StressCommand
{
    static readonly TimeSpan DefaultBudget = TimeSpan.FromSeconds(60);
    static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(2);

    public static Command Create()
    {
        var seed = Cli.Number("--seed", "seed of the programs (decimal or 0x hex); default: random, printed at the start", "seed");
        var threads = new Option<int>("--threads")
        {
            Description = $"threads (vCPUs) per program, {ConcurrentTdpStressCampaign.MinThreads} to {ConcurrentTdpStressCampaign.MaxThreads} (default 2)",
            HelpName = "n",
            DefaultValueFactory = _ => 2,
        };
        threads.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!int.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n)
                || n < ConcurrentTdpStressCampaign.MinThreads || n > ConcurrentTdpStressCampaign.MaxThreads))
                r.AddError($"--threads: '{r.Tokens[0].Value}' is not from {ConcurrentTdpStressCampaign.MinThreads} to {ConcurrentTdpStressCampaign.MaxThreads}");
        });
        var rounds = new Option<int>("--rounds") { Description = "rounds per program (default 200)", HelpName = "n", DefaultValueFactory = _ => 200 };
        rounds.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!int.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n <= 0))
                r.AddError($"--rounds: '{r.Tokens[0].Value}' is not a positive number");
        });
        var time = Cli.Duration("--time", "time budget: seconds, or like 90s, 10m (default 60 s)");
        var count = new Option<long?>("--count") { Description = "programs to run at most (default: until the budget ends)", HelpName = "n" };
        count.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!long.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n <= 0))
                r.AddError($"--count: '{r.Tokens[0].Value}' is not a positive number");
        });

        var command = new Command("stress", "Run tdp-concurrent's programs on real threads against the production concurrent TDP MMU, each round's history checked for linearizability (docs/concurrency-testing.md).");
        foreach (var o in new Option[] { seed, threads, rounds, time, count }) command.Add(o);
        command.SetAction(p => Run(
            p.GetValue(seed) ?? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)),
            p.GetValue(threads), p.GetValue(rounds), p.GetValue(time) ?? DefaultBudget, p.GetValue(count)));
        return command;
    }

    static int Run(ulong seed, int threads, int rounds, TimeSpan budget, long? count)
    {
        Console.Error.WriteLine(FormattableString.Invariant(
            $"mmuspec stress: seed {seed}, {threads} threads, {rounds} rounds per program, {(count is { } n ? $"at most {n} programs, " : "")}budget {budget.TotalSeconds:0} s, {Environment.ProcessorCount} cores"));
        var campaign = new ConcurrentTdpStressCampaign(seed, threads, rounds, budget, count);
        int signals = 0;
        bool interrupted = false;
        void OnSignal(PosixSignalContext ctx)
        {
            if (Interlocked.Increment(ref signals) > 1) return;
            ctx.Cancel = true;
            interrupted = true;
            campaign.Stop();
            Console.Error.WriteLine($"mmuspec stress: {ctx.Signal} received: stopping after the program running now (signal again to quit at once)");
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var progress = new Timer(_ => Console.Error.WriteLine(Line(campaign)), null, ProgressEvery, ProgressEvery);
        var failure = campaign.Run();
        progress.Dispose();

        string rerun = FormattableString.Invariant($"mmuspec stress --seed {seed} --threads {threads} --rounds {rounds}{(count is { } c ? $" --count {c}" : "")}");
        Console.WriteLine(FormattableString.Invariant(
            $"stress: {CaseRuns.Count(campaign.Cases, "program")}, {CaseRuns.Count(campaign.Rounds, "round")}, {CaseRuns.Count(campaign.Ops, "op")} in {campaign.Elapsed.TotalSeconds:0.0} s ({campaign.Retries} accesses answered Retry){(interrupted ? " (interrupted)" : "")}"));
        if (failure is { } f)
        {
            Console.WriteLine(FormattableString.Invariant($"FAILED: program {f.Index} of seed {seed}, round {f.Result.Rounds}:"));
            Console.WriteLine(f.Case.Render());
            Console.WriteLine(f.Result.Failure);
            if (CounterexampleFile.DefaultDirectory() is { } dir)
            {
                // The file keeps the program; replay explores its schedules under Coyote, which may or may not meet the interleaving this machine ran.
                var x = CounterexampleFile.Create(DiffProperties.Find(DiffProperties.ConcurrentTdpFamily), f.Case, seed: seed, batch: f.Index);
                string path = CounterexampleFile.Save(x, dir);
                Console.WriteLine($"counterexample file: {path}  (mmuspec replay {path} explores it under Coyote)");
            }
            Console.WriteLine($"seed {seed} (rerun: {rerun})");
            return Cli.Diverged;
        }
        Console.WriteLine(interrupted ? "every history linearizable so far" : "every history linearizable");
        Console.WriteLine($"seed {seed} (rerun: {rerun})");
        return interrupted ? CheckCommand.Interrupted : Cli.Ok;
    }

    static string Line(ConcurrentTdpStressCampaign c) => FormattableString.Invariant(
        $"[{c.Elapsed.TotalSeconds,6:0.0}s] {c.Cases,6} programs {c.Rounds,8} rounds {c.Ops,9} ops {c.Retries,6} retries");
}
