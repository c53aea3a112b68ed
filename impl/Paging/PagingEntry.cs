using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// One paging-structure entry in host memory (4 or 8 bytes wide), as <see cref="Memory.GuestPhysicalMemory"/>
/// found it for a gpa, or none when no slot backs the gpa. Pointer-sized; the walk reads and updates entries
/// only through it, so raw host addresses stay in guest memory and here.
/// </summary>
internal readonly unsafe struct PagingEntry
{
    private const nuint NarrowAlignMask = sizeof(uint) - 1;
    private const nuint WideAlignMask = sizeof(ulong) - 1;

    private readonly byte* _host;

    /// <summary>For guest memory, which owns the address: the entry at <paramref name="host"/>, or none for null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PagingEntry(byte* host)
    {
        Debug.Assert(((nuint)host & NarrowAlignMask) == 0, "an entry's host address is at least 4-byte aligned");
        _host = host;
    }

    /// <summary>For guest memory's write log: where the entry lives.</summary>
    internal byte* Host => _host;

    /// <summary>No slot backs the entry's gpa.</summary>
    public bool IsUnbacked => _host == null;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read(bool wide)
    {
        Debug.Assert(_host != null, "entry in unbacked memory");
        Debug.Assert(((nuint)_host & (wide ? WideAlignMask : NarrowAlignMask)) == 0, "misaligned entry");
        return wide ? *(ulong*)_host : *(uint*)_host;
    }

    /// <summary>
    /// ORs <paramref name="bits"/> into the entry as it is now in memory (so an entry reached twice ends
    /// with the union); writes only when a bit is missing, leaving already-set entries untouched.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetBits(bool wide, ulong bits)
    {
        Debug.Assert(_host != null, "entry in unbacked memory");
        if (wide)
        {
            Debug.Assert(((nuint)_host & WideAlignMask) == 0, "misaligned entry");
            ulong* p = (ulong*)_host;
            ulong value = *p;
            if ((value & bits) != bits)
                *p = value | bits;
        }
        else
        {
            Debug.Assert(((nuint)_host & NarrowAlignMask) == 0, "misaligned entry");
            uint* p = (uint*)_host;
            uint value = *p;
            uint narrowBits = (uint)bits;
            if ((value & narrowBits) != narrowBits)
                *p = value | narrowBits;
        }
    }
}
