using System.Reflection;
using System.Runtime.InteropServices;

namespace MmuSpec.Harness.Running;

/// <summary>
/// What built and runs this harness, as a counterexample file records it: the assembly's
/// informational version, the git commit embedded at build time (MmuSpec.Harness.csproj; "unknown"
/// when the build had no git), the .NET SDK that built it, the runtime and the OS.
/// </summary>
public sealed record BuildVersions(string Mmuspec, string Commit, string Sdk, string Runtime, string Os)
{
    public const string Unknown = "unknown";

    public static BuildVersions Current { get; } = Read();

    /// <summary>Both commits known and different: the file was written by another build of the code.</summary>
    public bool OtherCommitThan(BuildVersions other) =>
        Commit != Unknown && other.Commit != Unknown && !Commit.Equals(other.Commit, StringComparison.OrdinalIgnoreCase);

    static BuildVersions Read()
    {
        var assembly = typeof(BuildVersions).Assembly;
        string Metadata(string key) =>
            assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == key)?.Value is { Length: > 0 } v ? v : Unknown;
        return new BuildVersions(
            assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? Unknown,
            Metadata("MmuSpecCommit"),
            Metadata("MmuSpecSdkVersion"),
            RuntimeInformation.FrameworkDescription,
            $"{RuntimeInformation.OSDescription} {RuntimeInformation.OSArchitecture}".Trim());
    }
}

/// <summary>How the code a campaign runs was compiled.</summary>
public static class BuildInfo
{
    /// <summary>
    /// True when spec, impl or harness was compiled without optimization (the JIT then keeps every local and
    /// skips inlining: a campaign runs about ten times fewer cases per second). Directory.Build.props optimizes
    /// every configuration, so only an explicit -p:Optimize=false gets here; `check` warns.
    /// </summary>
    public static bool Unoptimized { get; } = new[]
    {
        typeof(MmuSpec.Spec.Paging.PagingMode).Assembly, typeof(MmuSpec.Impl.Memory.NativePagePool).Assembly, typeof(BuildInfo).Assembly,
    }.Any(a => a.GetCustomAttribute<System.Diagnostics.DebuggableAttribute>() is { IsJITOptimizerDisabled: true });
}
