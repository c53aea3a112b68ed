using System.Text.Json;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using static MmuSpec.Harness.Running.StrictObject;

namespace MmuSpec.Harness.Images;

/// <summary>
/// Reads a scenario from JSON (docs/json-format.md). Strict: an unknown field, a value of the
/// wrong type or a bad number is an <see cref="InputException"/> naming the field. Registers and
/// addresses are hex strings, 0x optional ("0x1000", "80050033": a debugger's output pasted as it
/// is) or JSON integers; maxphyaddr is decimal. Comments and trailing commas are allowed.
/// </summary>
public static partial class ScenarioJson
{
    static readonly string[] TopFields =
        ["comment", "mode", "wp", "pse", "smep", "smap", "pke", "nxe", "ac", "pkru", "maxphyaddr",
         "cr0", "cr4", "efer", "rflags", "cr3", "memory", "memslots", "access", "ept"];
    static readonly string[] AccessFields = ["gva", "type", "privilege"];
    static readonly string[] SlotFields = ["gpa", "size"];

    static readonly JsonDocumentOptions Options = new() { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true };

    /// <summary>Parses one scenario. With <paramref name="image"/>, guest memory is the image and the scenario must not list memory or memslots.</summary>
    public static Scenario Parse(string json, IPhysicalMemoryImage? image = null)
    {
        using var doc = ParseDocument(json);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new InputException($"a scenario is a JSON object, not {Kind(root)}");
        CheckFields(root, TopFields, "");

        var controls = new ControlsInput
        {
            Mode = OptionalString(root, "mode"),
            Wp = Flag(root, "wp"), Pse = Flag(root, "pse"), Smep = Flag(root, "smep"), Smap = Flag(root, "smap"),
            Pke = Flag(root, "pke"), Nxe = Flag(root, "nxe"), Ac = Flag(root, "ac"),
            Pkru = OptionalNumber(root, "pkru"), MaxPhyAddr = OptionalCount(root, "maxphyaddr"),
            Cr0 = OptionalNumber(root, "cr0"), Cr4 = OptionalNumber(root, "cr4"),
            Efer = OptionalNumber(root, "efer"), Rflags = OptionalNumber(root, "rflags"),
        }.Build();

        ulong cr3 = OptionalNumber(root, "cr3") ?? throw new InputException("cr3 is missing");
        Access? access = root.TryGetProperty("access", out var a) ? ParseAccess(a) : null;

        if (image is not null)
        {
            foreach (var f in new[] { "memory", "memslots" })
                if (root.TryGetProperty(f, out _))
                    throw new InputException($"{f}: a scenario walked over an image takes its memory from the image; remove '{f}'");
            return WithEpt(root, controls, Scenario.FromImage(controls, cr3, image, access));
        }
        var slots = root.TryGetProperty("memslots", out var s) ? ParseSlots(s) : null;
        var memory = root.TryGetProperty("memory", out var m) ? ParseMemory(m) : [];
        return WithEpt(root, controls, Scenario.Create(controls, cr3, slots, memory, access));
    }

    /// <summary>Parses an access object: {"gva": "0x...", "type": "read", "privilege": "supervisor"}.</summary>
    public static Access ParseAccess(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new InputException($"access: expected an object like {{\"gva\": \"0x1000\", \"type\": \"read\"}}, got {Kind(e)}");
        CheckFields(e, AccessFields, "access.");
        ulong gva = OptionalNumber(e, "gva", "access.gva") ?? throw new InputException("access.gva is missing");
        var type = ParseAccessType(OptionalString(e, "type", "access.type") ?? "read", "access.type");
        var privilege = ParsePrivilege(OptionalString(e, "privilege", "access.privilege") ?? "supervisor", "access.privilege");
        return MakeAccess(gva, type, privilege);
    }

    /// <summary>Every word an access type may be written as, in JSON and on the command line alike (one list).</summary>
    public static readonly IReadOnlyList<(string Word, AccessType Type)> AccessTypeWords =
    [
        ("read", AccessType.Read), ("r", AccessType.Read),
        ("write", AccessType.Write), ("w", AccessType.Write),
        ("fetch", AccessType.Fetch), ("exec", AccessType.Fetch), ("x", AccessType.Fetch),
    ];

    public static AccessType ParseAccessType(string text, string what)
    {
        string t = text.Trim();
        foreach (var (word, type) in AccessTypeWords)
            if (word.Equals(t, StringComparison.OrdinalIgnoreCase)) return type;
        throw new InputException($"{what}: unknown access type '{text}' (expected read, write or fetch)");
    }

    public static Privilege ParsePrivilege(string text, string what) => text.Trim().ToLowerInvariant() switch
    {
        "supervisor" or "kernel" => Privilege.Supervisor,
        "user" => Privilege.User,
        "implicit" or "implicit-supervisor" => Privilege.ImplicitSupervisor,
        _ => throw new InputException($"{what}: unknown privilege '{text}' (expected supervisor, user or implicit)"),
    };

    /// <summary>An access, with the one combination the architecture rules out reported as bad input.</summary>
    public static Access MakeAccess(ulong gva, AccessType type, Privilege privilege)
    {
        if (type == AccessType.Fetch && privilege == Privilege.ImplicitSupervisor)
            throw new InputException("access: an instruction fetch is never an implicit supervisor-mode access");
        return new Access(gva, type, privilege);
    }

    /// <summary>JSON text to a document, with a malformed document reported by line and column.</summary>
    public static JsonDocument ParseDocument(string json)
    {
        try { return Running.DuplicateFields.Refuse(JsonDocument.Parse(json, Options)); }
        catch (JsonException e)
        {
            string message = e.Message;
            int cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (cut >= 0) message = message[..cut];
            message = message.TrimEnd('.', ' ');
            string where = e.LineNumber is { } line ? $" at line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1}" : "";
            throw new InputException($"malformed JSON{where}: {message}");
        }
    }

    static List<Memslot> ParseSlots(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Array)
            throw new InputException($"memslots: expected an array like [{{\"gpa\": \"0x0\", \"size\": \"0x100000\"}}], got {Kind(e)}");
        var slots = new List<Memslot>();
        int i = 0;
        foreach (var s in e.EnumerateArray())
        {
            string at = $"memslots[{i}]";
            if (s.ValueKind != JsonValueKind.Object)
                throw new InputException($"{at}: expected an object with gpa and size, got {Kind(s)}");
            CheckFields(s, SlotFields, at + ".");
            ulong gpa = OptionalNumber(s, "gpa", at + ".gpa") ?? throw new InputException($"{at}.gpa is missing");
            ulong size = OptionalNumber(s, "size", at + ".size") ?? throw new InputException($"{at}.size is missing");
            if ((gpa & 0xFFF) != 0) throw new InputException($"{at}: gpa {Hex.Format(gpa)} is not 4 KiB aligned");
            if ((size & 0xFFF) != 0 || size == 0) throw new InputException($"{at}: size {Hex.Format(size)} is not a positive multiple of 4 KiB");
            slots.Add(new Memslot(gpa >> Memslot.PageShift, size >> Memslot.PageShift));
            i++;
        }
        return slots;
    }

    static List<MemoryWord> ParseMemory(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new InputException($"memory: expected an object of gpa -> value, like {{\"0x1000\": \"0x2003\"}}, got {Kind(e)}");
        var words = new List<MemoryWord>();
        foreach (var p in e.EnumerateObject())
        {
            if (Ambiguous(p.Name, forKey: true) is { } ambiguous) throw new InputException($"memory: key {ambiguous}");
            if (Hex.Read(p.Name, bareIsHex: true, out ulong gpa) is { } problem) throw new InputException($"memory: key {problem}");
            ulong value = Number(p.Value, $"memory {Hex.Format(gpa)}");
            words.Add(new MemoryWord(gpa, value));
        }
        return words;
    }

    static void CheckFields(JsonElement obj, string[] known, string prefix)
    {
        foreach (var p in obj.EnumerateObject())
            if (!known.Contains(p.Name))
                throw new InputException($"unknown field '{prefix}{p.Name}' (known: {string.Join(", ", known)})");
    }

    static bool Flag(JsonElement obj, string name)
    {
        if (!obj.TryGetProperty(name, out var v)) return false;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InputException($"{name}: expected true or false, got {Kind(v)}"),
        };
    }

    static string? OptionalString(JsonElement obj, string name, string? what = null)
    {
        if (!obj.TryGetProperty(name, out var v)) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString()
            : throw new InputException($"{what ?? name}: expected a string, got {Kind(v)}");
    }

    /// <summary>A register or address: a hex string (0x optional, as a debugger prints it) or a JSON integer.</summary>
    static ulong? OptionalNumber(JsonElement obj, string name, string? what = null) =>
        obj.TryGetProperty(name, out var v) ? Number(v, what ?? name, bareIsHex: true) : null;

    /// <summary>A count (maxphyaddr): a JSON integer, or a decimal string (hex with 0x).</summary>
    static ulong? OptionalCount(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) ? Number(v, name, bareIsHex: false) : null;

    /// <summary>
    /// A register or address string of two or more decimal digits and no 0x ("4096", "80050033"): refused. Bare
    /// strings are hex (as pasted from a debugger), but scenario files of earlier versions wrote decimal strings,
    /// so such a file must fail loudly rather than walk another address. A hex letter or 0x decides it.
    /// </summary>
    static string? Ambiguous(string text, bool forKey)
    {
        string t = text.Trim().Replace("_", "", StringComparison.Ordinal);
        if (t.Length < 2 || !t.All(char.IsAsciiDigit)) return null;
        string hint = $"'{text}' is ambiguous in JSON: write \"0x{text.Trim()}\" for hex";
        return forKey || !ulong.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong d)
            ? hint : $"{hint} or the JSON integer {d} for decimal";
    }

    static ulong Number(JsonElement v, string what, bool bareIsHex = true)
    {
        if (v.ValueKind == JsonValueKind.String && bareIsHex && Ambiguous(v.GetString()!, forKey: false) is { } ambiguous)
            throw new InputException($"{what}: {ambiguous}");
        if (v.ValueKind == JsonValueKind.String) return bareIsHex ? Hex.ParseHex(v.GetString()!, what) : Hex.Parse(v.GetString()!, what);
        if (v.ValueKind == JsonValueKind.Number && v.TryGetUInt64(out ulong n)) return n;
        if (v.ValueKind == JsonValueKind.Number && v.GetRawText().All(char.IsAsciiDigit))
            throw new InputException($"{what}: {v.GetRawText()} is larger than 64 bits");
        throw new InputException($"{what}: expected a hex string like \"0x1000\" or a non-negative integer, got {Kind(v)}");
    }
}
