using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>Walk results as JSON (docs/json-format.md): one object per walk, numbers as 0x-prefixed lower-case hex strings.</summary>
public static class WalkJson
{
    /// <summary>One walk as a single-line JSON object; <paramref name="steps"/> adds the spec's step list.</summary>
    public static string ToJson(WalkReport r, bool steps, bool indented = false)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WriterOptions(indented)))
            Write(w, r, steps);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>A translation's rights as the "rights" object of the JSON formats (docs/json-format.md).</summary>
    public static void WriteRights(Utf8JsonWriter w, TranslationRights rights)
    {
        w.WriteStartObject("rights");
        w.WriteBoolean("user", rights.User);
        w.WriteBoolean("writable", rights.Writable);
        w.WriteBoolean("nx", rights.NoExecute);
        w.WriteNumber("pkey", rights.ProtectionKey);
        w.WriteEndObject();
    }

    public static void Write(Utf8JsonWriter w, WalkReport r, bool steps)
    {
        w.WriteStartObject();
        w.WriteString("outcome", r.Outcome);
        switch (r.Result)
        {
            case WalkResult.Translated t:
                w.WriteString("gpa", Hex.Format(t.Gpa));
                w.WriteString("page_size", t.Size.Name());
                WriteRights(w, t.Rights);
                break;
            case WalkResult.PageFault f:
                w.WriteString("error_code", Hex.Format((uint)f.ErrorCode));
                w.WriteStartArray("error_bits");
                foreach (var bit in ErrorBits(f.ErrorCode)) w.WriteStringValue(bit);
                w.WriteEndArray();
                break;
            case WalkResult.GeneralProtection g:
                w.WriteString("gp_reason", SnakeCase(g.Reason.ToString()));
                break;
        }
        w.WriteStartArray("changed_entries");
        foreach (var u in r.Changes)
        {
            w.WriteStartObject();
            w.WriteString("gpa", Hex.Format(u.Gpa));
            w.WriteString("before", Hex.Format(u.Before));
            w.WriteString("after", Hex.Format(u.After));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (r.Explanation is { } e) w.WriteString("rule", e.Rule);
        w.WriteString("engine", r.Engine);
        w.WriteStartObject("access");
        w.WriteString("gva", Hex.Format(r.Access.Gva));
        w.WriteString("type", r.Access.Type.ToString().ToLowerInvariant());
        w.WriteString("privilege", PrivilegeName(r.Access.Privilege));
        w.WriteEndObject();
        if (steps && r.Explanation is { } ex)
        {
            int entryBytes = r.Scenario.EntryBytes;
            w.WriteStartArray("steps");
            foreach (var s in ex.Steps)
            {
                w.WriteStartObject();
                w.WriteNumber("level", s.Level);
                w.WriteString("entry", s.EntryName);
                w.WriteNumber("index", PagingLevels.Index(r.Scenario.Mode, s.Level, r.Access.Gva));
                if (s.EntryGpa is { } g) w.WriteString("gpa", Hex.Format(g)); else w.WriteNull("gpa");
                w.WriteString("raw", Hex.Format(s.Entry.Raw));
                w.WriteStartArray("flags");
                foreach (var flag in s.Entry.Flags(entryBytes).Split(' ', StringSplitOptions.RemoveEmptyEntries)) w.WriteStringValue(flag);
                w.WriteEndArray();
                w.WriteString("rights", s.RightsSoFar.ToString());
                w.WriteString("note", s.Note);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    /// <summary>A malformed batch line's result.</summary>
    public static string Error(string message)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WriterOptions(indented: false)))
        {
            w.WriteStartObject();
            w.WriteString("error", message);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>
    /// Output for people and tools, not for embedding in HTML: quotes, '§' and non-ASCII stay as
    /// they are (JSON still escapes '"', '\' and control characters).
    /// </summary>
    public static JsonWriterOptions WriterOptions(bool indented) =>
        new() { Indented = indented, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The error code's bits by their SDM names: P, W, U, RSVD, I/D, PK.</summary>
    public static IEnumerable<string> ErrorBits(PageFaultErrorCode code)
    {
        string d = code.Describe();                       // "0x7 [P W U]"
        int open = d.IndexOf('[');
        return d[(open + 1)..^1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
    }

    public static string PrivilegeName(Privilege p) => p switch
    {
        Privilege.Supervisor => "supervisor",
        Privilege.User => "user",
        _ => "implicit",
    };

    static string SnakeCase(string name)
    {
        var sb = new StringBuilder();
        foreach (char ch in name)
        {
            if (char.IsUpper(ch) && sb.Length > 0) sb.Append('_');
            sb.Append(char.ToLowerInvariant(ch));
        }
        return sb.ToString();
    }
}
