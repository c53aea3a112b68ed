using System.Text.Json;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace MmuSpec.Tests.Differential;

/// <summary>The progress lines a plain `dotnet test` prints (<see cref="PropertyProgress"/>).</summary>
public sealed class PropertyProgressTests
{
    sealed class Recorder : LongLivedMarshalByRefObject, IMessageSink
    {
        public List<IMessageSinkMessage> Messages { get; } = [];
        public bool OnMessage(IMessageSinkMessage message) { Messages.Add(message); return true; }
    }

    [Fact]
    public void A_passed_property_is_one_diagnostic_message_with_its_name_cases_and_time()
    {
        var sink = new Recorder();
        var progress = new PropertyProgress(sink);
        progress.Passed("walk-pae", 1000, TimeSpan.FromMilliseconds(41_260));
        progress.Passed("shadow-pae", 1, TimeSpan.FromMilliseconds(40));
        Assert.Equal(["walk-pae: passed 1000 cases in 41.3 s", "shadow-pae: passed 1 case in 0.0 s"],
            sink.Messages.Select(m => Assert.IsAssignableFrom<IDiagnosticMessage>(m).Message));
    }

    /// <summary>Without diagnosticMessages the adapter drops the lines and `dotnet test` is silent again.</summary>
    [Fact]
    public void The_runner_configuration_next_to_the_tests_turns_diagnostic_messages_on()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "xunit.runner.json");
        using var config = JsonDocument.Parse(File.ReadAllText(path));
        Assert.True(config.RootElement.GetProperty("diagnosticMessages").GetBoolean());
    }
}
