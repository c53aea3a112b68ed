using System.Globalization;
using System.Text.Json;
using MmuSpec.Harness.Images;

namespace MmuSpec.Harness.Running;

/// <summary>
/// One JSON object read strictly, for the counterexample format (docs/counterexample-format.md):
/// every field it may have is declared, an unknown one is an error, a missing one is an error when
/// asked for, and a value of the wrong type is an error. Every error is an <see cref="InputException"/>
/// naming the field by its path from the document root, e.g. <c>case.ops[3].gpa</c>.
/// </summary>
public readonly struct StrictObject
{
    readonly JsonElement element;

    StrictObject(JsonElement element, string path) { this.element = element; Path = path; }

    /// <summary>Where this object is: "" for the root, else e.g. "case.ops[3]".</summary>
    public string Path { get; }

    /// <summary>
    /// <paramref name="e"/> as an object whose fields are among <paramref name="fields"/>;
    /// <paramref name="what"/> says what was expected when it is not an object.
    /// </summary>
    public static StrictObject Open(JsonElement e, string path, string what, params string[] fields)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new InputException($"{Name(path)}: expected {what}, got {Kind(e)}");
        foreach (var p in e.EnumerateObject())
            if (!fields.Contains(p.Name, StringComparer.Ordinal))
                throw new InputException($"unknown field '{Join(path, p.Name)}' (known: {string.Join(", ", fields)})");
        return new StrictObject(e, path);
    }

    /// <summary>The path of field <paramref name="name"/> of this object.</summary>
    public string At(string name) => Join(Path, name);

    public bool Has(string name) => element.TryGetProperty(name, out _);

    /// <summary>A field that must be present (its value may still be null).</summary>
    public JsonElement Field(string name) =>
        element.TryGetProperty(name, out var v) ? v : throw new InputException($"{At(name)} is missing");

    public bool IsNull(string name) => Field(name).ValueKind == JsonValueKind.Null;

    /// <summary>A number written as a hex string ("0x1000"; a decimal string is accepted too).</summary>
    public ulong Hex(string name) => HexValue(Field(name), At(name));

    public static ulong HexValue(JsonElement v, string path)
    {
        if (v.ValueKind != JsonValueKind.String) throw new InputException($"{path}: expected a hex string like \"0x1000\", got {Kind(v)}");
        string text = v.GetString()!;
        return Images.Hex.Scan(text, bareIsHex: false, out ulong value) switch
        {
            Images.NumberScan.Ok => value,
            Images.NumberScan.TooWide => throw new InputException($"{path}: '{text}' is larger than 64 bits"),
            _ => throw new InputException($"{path}: '{text}' is not a number (write hex as \"0x1000\")"),
        };
    }

    public int Int(string name)
    {
        var v = Field(name);
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) ? n
            : throw new InputException(IsWholeNumber(v) ? $"{At(name)}: {v.GetRawText()} does not fit 32 bits"
                : $"{At(name)}: expected an integer, got {Kind(v)}");
    }

    public int? NullableInt(string name) => IsNull(name) ? null : Int(name);

    public long Long(string name)
    {
        var v = Field(name);
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n) ? n
            : throw new InputException(IsWholeNumber(v) ? $"{At(name)}: {v.GetRawText()} is larger than 64 bits"
                : $"{At(name)}: expected an integer, got {Kind(v)}");
    }

    public long? NullableLong(string name) => IsNull(name) ? null : Long(name);

    public bool Bool(string name) => Field(name).ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw new InputException($"{At(name)}: expected true or false, got {Kind(Field(name))}"),
    };

    public string String(string name)
    {
        var v = Field(name);
        return v.ValueKind == JsonValueKind.String ? v.GetString()!
            : throw new InputException($"{At(name)}: expected a string, got {Kind(v)}");
    }

    public string? NullableString(string name) => IsNull(name) ? null : String(name);

    /// <summary>A non-negative decimal number written as a string (a seed: too wide for every JSON reader as a number).</summary>
    public ulong? NullableDecimalString(string name)
    {
        string? s = NullableString(name);
        if (s is null) return null;
        return ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n) ? n
            : throw new InputException(s.Length > 0 && s.All(char.IsAsciiDigit) ? $"{At(name)}: '{s}' is larger than 64 bits"
                : $"{At(name)}: '{s}' is not a non-negative decimal number");
    }

    /// <summary>A JSON number written as digits only (with a sign at most): an integer, whatever its size.</summary>
    static bool IsWholeNumber(JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.GetRawText().TrimStart('-').All(char.IsAsciiDigit);

    /// <summary>A string that must be one of <paramref name="choices"/>.</summary>
    public T Choice<T>(string name, IReadOnlyDictionary<string, T> choices)
    {
        string s = String(name);
        return choices.TryGetValue(s, out var value) ? value
            : throw new InputException($"{At(name)}: unknown value '{s}' (expected {string.Join(", ", choices.Keys)})");
    }

    /// <summary>The elements of an array field, each with its path.</summary>
    public IEnumerable<(JsonElement Element, string Path)> Array(string name)
    {
        var v = Field(name);
        if (v.ValueKind != JsonValueKind.Array) throw new InputException($"{At(name)}: expected an array, got {Kind(v)}");
        string at = At(name);
        return v.EnumerateArray().Select((e, i) => (e, $"{at}[{i.ToString(CultureInfo.InvariantCulture)}]"));
    }

    /// <summary>A field that is an object, opened strictly.</summary>
    public StrictObject Object(string name, string what, params string[] fields) => Open(Field(name), At(name), what, fields);

    static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    static string Name(string path) => path.Length == 0 ? "the document" : path;

    public static string Kind(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => $"the string \"{v.GetString()}\"",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => "null",
    };
}
