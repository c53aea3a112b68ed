using System.CommandLine;
using MmuSpec.Cli.Commands;

namespace MmuSpec.Cli;

/// <summary>The root command with every subcommand: Program.cs parses with it, and the docs tests read its option table.</summary>
public static class MmuSpecCommand
{
    public static RootCommand Create() => new("mmuspec: the x86 page-walk spec and its fast impl, side by side.")
    {
        CheckCommand.Create(),
        ReplayCommand.Create(),
        WalkCommand.Create(),
        MappingsCommand.Create(),
        SynthImageCommand.Create(),
        MutantsCommand.Create(),
        StressCommand.Create(),
    };
}
