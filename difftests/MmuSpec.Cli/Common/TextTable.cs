using System.Text;

namespace MmuSpec.Cli;

/// <summary>Rows of text in aligned columns (two spaces apart); numbers right-aligned where asked; the last column is not padded.</summary>
public sealed class TextTable(params string[] headers)
{
    readonly List<string[]> rows = [];
    readonly HashSet<int> right = [];

    public int Count => rows.Count;

    public TextTable AlignRight(params int[] columns)
    {
        foreach (int c in columns) right.Add(c);
        return this;
    }

    public void Add(params string[] cells) => rows.Add(cells);

    public string Render(string indent = "")
    {
        var all = headers.Length > 0 ? rows.Prepend(headers).ToList() : rows;
        int columns = all.Max(r => r.Length);
        var width = new int[columns];
        foreach (var r in all)
            for (int i = 0; i < r.Length; i++) width[i] = Math.Max(width[i], r[i].Length);
        var sb = new StringBuilder();
        foreach (var r in all)
        {
            sb.Append(indent);
            for (int i = 0; i < r.Length; i++)
            {
                bool last = i == r.Length - 1;
                string cell = right.Contains(i) ? r[i].PadLeft(width[i]) : last ? r[i] : r[i].PadRight(width[i]);
                sb.Append(cell);
                if (!last) sb.Append("  ");
            }
            sb.AppendLine();
        }
        return sb.ToString().TrimEnd('\n', '\r');
    }
}
