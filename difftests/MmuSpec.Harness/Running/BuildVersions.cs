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
