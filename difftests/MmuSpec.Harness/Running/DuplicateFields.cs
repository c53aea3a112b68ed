using System.Globalization;
using System.Text.Json;
using MmuSpec.Harness.Images;

namespace MmuSpec.Harness.Running;

/// <summary>
/// Refuses a JSON document in which an object names a field twice. System.Text.Json keeps the last
/// one silently, so a hand-edited file could say one thing and run another; every reader of ours
/// (scenarios, cases, counterexample files) goes through <see cref="ScenarioJson.ParseDocument"/>,
/// which calls this.
/// </summary>
public static class DuplicateFields
{
    /// <summary><paramref name="doc"/> itself when no object repeats a field; else disposes it and throws an <see cref="InputException"/> naming the field's path.</summary>
    public static JsonDocument Refuse(JsonDocument doc)
    {
        try { Check(doc.RootElement, ""); }
        catch
        {
            doc.Dispose();
            throw;
        }
        return doc;
    }

    static void Check(JsonElement e, string path)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                var names = new HashSet<string>(StringComparer.Ordinal);
                foreach (var p in e.EnumerateObject())
                {
                    string at = path.Length == 0 ? p.Name : $"{path}.{p.Name}";
                    if (!names.Add(p.Name)) throw new InputException($"duplicate field '{at}': each field may appear once in an object");
                    Check(p.Value, at);
                }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in e.EnumerateArray()) Check(item, $"{path}[{(i++).ToString(CultureInfo.InvariantCulture)}]");
                break;
        }
    }
}
