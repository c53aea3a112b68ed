using System.Diagnostics;
using System.Runtime.CompilerServices;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.PageTable;

/// <summary>
/// A pre-order walk over every entry covering the frames [start, end), like KVM's for_each_tdp_pte:
/// <c>foreach (PteRef pte in new PteIterator&lt;TFormat&gt;(root, rootLevel, start, end))</c>.
/// Each table's entry is yielded before the entries of the table it points at; entries that are not
/// present are yielded too, so a caller can tell a hole from a mapping.
/// <para>
/// The one rule: the caller may rewrite the current entry (zap it, change its bits, replace it) and
/// the walk goes on correctly, because the entry is read again at the moment the walk decides whether
/// to step down into it. A table the caller unlinks must not be freed before the walk has moved past
/// it, which is true as soon as the entry no longer points at it.
/// </para>
/// </summary>
internal ref struct PteIterator<TFormat> where TFormat : struct, IPteFormat
{
    // Tables on the way to the current entry, by level: stepping up needs no walk from the root (KVM's pt_path).
    private TablePath _path;

    // Frame the walk heads for: the first step down lands on `start`, later ones on a child's first entry.
    private ulong _target;

    // First frame of the current entry: yielded to the caller and compared with _end.
    private ulong _frame;

    // Exclusive end of the range: the walk stops at the first entry starting at or after it.
    private readonly ulong _end;

    // The current entry's table and index, so a step sideways is one increment.
    private TableRef _table;
    private int _index;

    // Level of the current entry: its size, and whether it may point at a table.
    private int _level;

    // Stepping up stops here.
    private readonly int _rootLevel;

    // Tables at this level are not entered, for callers that only care about large entries.
    private readonly int _minLevel;

    // foreach calls MoveNext before the first Current, so the first call yields the start entry.
    private bool _started;

    // False once the walk has stepped past the root's last entry (or the range was empty).
    private bool _valid;

    /// <param name="root">The root table, or no table for an empty tree (nothing is yielded).</param>
    /// <param name="minLevel">Lowest level yielded; 1 visits everything.</param>
    public PteIterator(TableRef root, int rootLevel, ulong start, ulong end, int minLevel = 1)
    {
        Debug.Assert(rootLevel is >= 1 and <= MaxLevel && minLevel >= 1 && minLevel <= rootLevel, "bad levels");
        _end = end;
        _rootLevel = rootLevel;
        _minLevel = minLevel;
        _level = rootLevel;
        _target = start;
        _frame = AlignDown(start, rootLevel);
        _valid = !root.IsNull && start < end && start < FramesPerTable(rootLevel);
        if (_valid)
        {
            root.AssertLevel(rootLevel);
            _path[rootLevel] = root;
            _table = root;
            _index = Index(start, rootLevel);
        }
    }

    public readonly PteRef Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => new(_table, _index, _level, _frame, _table[_index]);
    }

    public readonly PteIterator<TFormat> GetEnumerator() => this;

    public bool MoveNext()
    {
        if (!_valid)
            return false;
        if (_started)
            Advance();
        else
            _started = true;
        return _valid && _frame < _end;
    }

    private void Advance()
    {
        if (TryStepDown())
            return;
        do
        {
            if (TryStepSide())
                return;
        } while (TryStepUp());
        _valid = false;
    }

    private bool TryStepDown()
    {
        if (_level == _minLevel)
            return false;
        ulong value = _table[_index]; // read again: the caller may have rewritten it
        if (!TFormat.IsPresent(value) || TFormat.IsLeaf(value, _level))
            return false;
        _level--;
        TableRef child = TableRef.At(TFormat.TableAddress(value), _level);
        _path[_level] = child;
        _frame = AlignDown(_target, _level);
        _table = child;
        _index = Index(_frame, _level);
        return true;
    }

    private bool TryStepSide()
    {
        if (_index == LastIndex)
            return false;
        _frame += FramesPerEntry(_level);
        _target = _frame;
        _index++;
        return true;
    }

    private bool TryStepUp()
    {
        if (_level == _rootLevel)
            return false;
        _level++;
        _frame = AlignDown(_frame, _level);
        _table = _path[_level];
        _index = Index(_frame, _level);
        return true;
    }

    /// <summary>Tables indexed by level (slot 0 unused).</summary>
    [InlineArray(MaxLevel + 1)]
    private struct TablePath
    {
        private TableRef _element0;
    }
}
