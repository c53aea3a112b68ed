using System.Globalization;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.FSharp.Core;

namespace MmuSpec.Harness.Running;

/// <summary>A property failed; the message is the rendered counterexample with its replay line.</summary>
public sealed class PropertyFailedException(string message) : Exception(message);

/// <summary>
/// Runs one FsCheck property with our runner. The environment decides depth and replay, so CI
/// and a developer's shell run the same tests differently without code changes:
/// <c>MMUSPEC_MAX_TEST</c> (cases per property), <c>MMUSPEC_REPLAY</c> ("seed,gamma,size": one case),
/// <c>MMUSPEC_SEED</c> (a fixed start for every property's random stream, so a whole test run draws
/// the same cases each time; mutation testing relies on it), <c>MMUSPEC_COUNTEREXAMPLES</c> (where
/// a failure writes its counterexample file; "off" writes none) and <c>MMUSPEC_SHRINK</c> ("off":
/// a failure is reported as drawn, unshrunk; mutation testing needs the kill, not a minimal case,
/// and a shadow shrink can take a minute).
/// <para>
/// The op-sequence differential properties run here rather than as FsCheck.Xunit [Property] tests
/// (which the F# spec properties are): the same <see cref="DiffProperty"/> runs in `dotnet test` and
/// in `mmuspec check` campaigns (batches seeded from the campaign's seed, outside xunit), and a
/// failure must be explained step by step, written to a counterexample file with the campaign's
/// seed and batch, and end with both replay commands. FsCheck.Xunit's attribute always installs its
/// own runner (no Runner setting) and takes its settings only as attribute constants, so none of
/// that, nor MMUSPEC_SEED's per-property start or MMUSPEC_SHRINK, could be had through it.
/// </para>
/// </summary>
public static class PropertyCheck
{
    public const string MaxTestVariable = "MMUSPEC_MAX_TEST";
    public const string ReplayVariable = "MMUSPEC_REPLAY";
    public const string SeedVariable = "MMUSPEC_SEED";
    public const string ShrinkVariable = "MMUSPEC_SHRINK";

    /// <summary>Cases per property: MMUSPEC_MAX_TEST if set, else <paramref name="defaultCount"/>.</summary>
    public static int MaxTest(int defaultCount)
    {
        string? v = Environment.GetEnvironmentVariable(MaxTestVariable);
        if (string.IsNullOrWhiteSpace(v)) return defaultCount;
        return int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n > 0
            ? n : throw new ArgumentException($"{MaxTestVariable}='{v}' is not a positive integer");
    }

    /// <summary>MMUSPEC_REPLAY parsed, null when unset; a bad token is an error naming the variable.</summary>
    public static Replay? ReplayFromEnvironment() => ReplayFrom(Environment.GetEnvironmentVariable(ReplayVariable));

    /// <summary><paramref name="v"/> as MMUSPEC_REPLAY's value: null when unset or blank.</summary>
    public static Replay? ReplayFrom(string? v)
    {
        if (string.IsNullOrWhiteSpace(v)) return null;
        try { return ParseReplay(v); }
        catch (FormatException e) { throw new ArgumentException($"{ReplayVariable}: {e.Message}", e); }
    }

    /// <summary>False when MMUSPEC_SHRINK is "off" (or "0"); true when unset or "on" (or "1").</summary>
    public static bool ShrinkFromEnvironment()
    {
        string? v = Environment.GetEnvironmentVariable(ShrinkVariable)?.Trim();
        return v switch
        {
            null or "" or "on" or "1" => true,
            "off" or "0" => false,
            _ => throw new ArgumentException($"{ShrinkVariable}='{v}' is neither 'on' nor 'off'"),
        };
    }

    /// <summary>MMUSPEC_SEED (decimal or 0x hex) if set, else null.</summary>
    public static ulong? SeedFromEnvironment()
    {
        string? v = Environment.GetEnvironmentVariable(SeedVariable)?.Trim();
        if (string.IsNullOrEmpty(v)) return null;
        bool hex = v.StartsWith("0x", StringComparison.OrdinalIgnoreCase);
        return ulong.TryParse(hex ? v[2..] : v, hex ? NumberStyles.AllowHexSpecifier : NumberStyles.None, CultureInfo.InvariantCulture, out ulong seed)
            ? seed : throw new ArgumentException($"{SeedVariable}='{v}' is not a number (decimal or 0x hex)");
    }

    /// <summary>
    /// Where property <paramref name="name"/>'s random stream starts under a fixed seed: SplitMix64
    /// of the seed mixed with a hash of the name (FNV-1a, stable across runs, unlike string.GetHashCode),
    /// so each property draws its own cases and the same seed draws the same ones every run.
    /// </summary>
    public static Replay SeededStart(ulong seed, string name)
    {
        ulong h = 0xCBF2_9CE4_8422_2325;
        foreach (char ch in name) h = (h ^ ch) * 0x0000_0100_0000_01B3;
        ulong s = Mix(seed ^ h);
        return new Replay(new Rnd(s, Mix(s ^ 0xD1B5_4A32_D192_ED03) | 1), FSharpOption<int>.None);
    }

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
        return z ^ (z >> 31);
    }

    /// <summary>
    /// The largest size a replay token may carry: the deep tier's end size (<c>mmuspec check --deep</c>),
    /// the largest any run draws. The generators scale with the size and never cap it, so a far larger
    /// one would only build an enormous case (a size of 999999999 never finished).
    /// </summary>
    public const int MaxReplaySize = 300;

    /// <summary>
    /// Parses "seed,gamma,size" (as printed on failure); a <see cref="FormatException"/> says what is
    /// wrong: not three integers, an even gamma, or a size outside 0..<see cref="MaxReplaySize"/>.
    /// </summary>
    public static Replay ParseReplay(string token)
    {
        var parts = token.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 3
            || !ulong.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out ulong seed)
            || !ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out ulong gamma)
            || !int.TryParse(parts[2], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int size))
            throw new FormatException($"replay token '{token}' is not 'seed,gamma,size' (three integers, as printed by a failure)");
        // SplitMix64 steps its state by gamma: an even gamma would not visit every state, and FsCheck refuses it.
        if (gamma % 2 == 0)
            throw new FormatException($"replay token '{token}': the gamma {gamma} is even; SplitMix needs an odd gamma (copy the token as a failure printed it)");
        if (size is < 0 or > MaxReplaySize)
            throw new FormatException($"replay token '{token}': the size {size} is outside 0..{MaxReplaySize} (the deep tier's largest size)");
        return new Replay(new Rnd(seed, gamma), FSharpOption<int>.Some(size));
    }

    public static string FormatReplay(Replay r) =>
        string.Create(CultureInfo.InvariantCulture, $"{r.Rnd.Seed},{r.Rnd.Gamma},{(FSharpOption<int>.get_IsSome(r.Size) ? r.Size.Value : 100)}");

    /// <summary>
    /// Checks <paramref name="property"/> on <paramref name="maxTest"/> cases and throws
    /// <see cref="PropertyFailedException"/> with the rendered counterexample on failure. A replay
    /// with a size (as a failure prints it) reruns exactly that one case; a replay without a size
    /// only fixes where the random stream starts, so <paramref name="maxTest"/> cases still run.
    /// A failure writes the shrunk counterexample to a file (docs/counterexample-format.md) in
    /// <paramref name="counterexampleDirectory"/> (default: <see cref="CounterexampleFile.DefaultDirectory"/>,
    /// from $MMUSPEC_COUNTEREXAMPLES), recording <paramref name="campaignSeed"/> and
    /// <paramref name="campaignBatch"/> when given; the report names the file and
    /// <see cref="PropertyRunner.CounterexampleFile"/> holds its path.
    /// </summary>
    public static PropertyRunner Check(string name, DiffProperty property, Action<string> output, int maxTest,
        Replay? replay = null, bool throwOnFailure = true, bool verbose = false, Func<object, bool>? holds = null,
        string? counterexampleDirectory = null, ulong? campaignSeed = null, long? campaignBatch = null)
    {
        if (replay is null && SeedFromEnvironment() is { } fixedSeed) replay = SeededStart(fixedSeed, name);
        var target = new CounterexampleTarget(property, counterexampleDirectory ?? CounterexampleFile.DefaultDirectory(), campaignSeed, campaignBatch);
        var runner = new PropertyRunner(name, output, property.Explain, verbose, target);
        var config = Config.Quick.WithRunner(runner).WithName(name)
            .WithMaxTest(replay is not null && FSharpOption<int>.get_IsSome(replay.Size) ? 1 : maxTest)
            .WithReplay(replay is null ? FSharpOption<Replay>.None : FSharpOption<Replay>.Some(replay));
        FsCheck.Check.One(config, property.ForAll(holds ?? property.Holds, ShrinkFromEnvironment()));
        if (throwOnFailure && runner.FailureReport is { } report) throw new PropertyFailedException(report);
        return runner;
    }
}
