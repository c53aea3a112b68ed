using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// One remote TLB flush (KVM's kvm_flush_remote_tlbs_range): gfns [StartGfn, StartGfn + Count), the
/// shared bit stripped, in both roots, i.e. the shared and the private translations of those gfns.
/// </summary>
public readonly record struct TdpFlushRange(ulong StartGfn, ulong Count)
{
    public ulong EndGfn => StartGfn + Count;

    public override string ToString() => $"[0x{StartGfn:x}, 0x{EndGfn:x})";
}

/// <summary>
/// The remote TLB flushes an MMU issued since they were last taken (<see cref="ITdpVm.TakeFlushes"/>):
/// up to <see cref="Capacity"/> gfn ranges, or "everything".
/// <para>
/// Fixed size, stored inline in the MMU object: recording a flush on the zap or fault path is a few
/// compares and a store, with no list to grow and no array per operation. A flush that touches or
/// overlaps a recorded range widens it (a zap walks up in gfn order, so consecutive leaves become one
/// range); when a new range finds no room, the log degrades to a flush of everything, which is always
/// correct (KVM falls back the same way: kvm_flush_remote_tlbs_range becomes kvm_flush_remote_tlbs when
/// the hardware or hypervisor has no ranged flush). Taking the log copies it (16 ranges, 264 bytes).
/// </para>
/// </summary>
public struct TdpFlushLog
{
    /// <summary>Ranges kept before the log turns into "flush everything".</summary>
    public const int Capacity = 16;

    private RangeBuffer _ranges;
    private int _count;
    private bool _all;

    /// <summary>Everything was flushed (KVM's kvm_flush_remote_tlbs); <see cref="Count"/> is then 0.</summary>
    public readonly bool FlushedAll => _all;

    /// <summary>Ranges recorded (0 when <see cref="FlushedAll"/>).</summary>
    public readonly int Count => _count;

    /// <summary>Nothing was flushed.</summary>
    public readonly bool IsEmpty => !_all && _count == 0;

    public readonly TdpFlushRange this[int index]
    {
        get
        {
            if ((uint)index >= (uint)_count)
                ThrowHelper.ArgumentOutOfRange(nameof(index), "No flush range with that index.");
            return _ranges[index];
        }
    }

    /// <summary>Records a flush of gfns [startGfn, startGfn + count).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Add(ulong startGfn, ulong count)
    {
        if (_all)
            return;
        ulong end = startGfn + count;
        // The most recent range first: that is where a zap's next leaf usually continues.
        for (int i = _count - 1; i >= 0; i--)
        {
            ref TdpFlushRange r = ref _ranges[i];
            if (startGfn <= r.EndGfn && r.StartGfn <= end)
            {
                ulong start = Math.Min(startGfn, r.StartGfn);
                r = new TdpFlushRange(start, Math.Max(end, r.EndGfn) - start);
                return;
            }
        }
        if (_count == Capacity)
        {
            AddAll();
            return;
        }
        _ranges[_count++] = new TdpFlushRange(startGfn, count);
    }

    /// <summary>Records a flush of everything.</summary>
    internal void AddAll()
    {
        _all = true;
        _count = 0;
    }

    internal void Clear()
    {
        _all = false;
        _count = 0;
    }

    public override readonly string ToString()
    {
        if (_all)
            return "flush all";
        if (_count == 0)
            return "no flush";
        var parts = new string[_count];
        for (int i = 0; i < _count; i++)
            parts[i] = _ranges[i].ToString();
        return string.Join(", ", parts);
    }

    [InlineArray(Capacity)]
    private struct RangeBuffer
    {
        private TdpFlushRange _element0;
    }
}
