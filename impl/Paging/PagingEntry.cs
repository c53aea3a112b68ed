using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>Reads and updates one paging-structure entry in host memory (4 or 8 bytes wide).</summary>
internal static unsafe class PagingEntry
{
    private const nuint NarrowAlignMask = sizeof(uint) - 1;
    private const nuint WideAlignMask = sizeof(ulong) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read(byte* entry, bool wide)
    {
        Debug.Assert(entry != null, "entry in unbacked memory");
        Debug.Assert(((nuint)entry & (wide ? WideAlignMask : NarrowAlignMask)) == 0, "misaligned entry");
        return wide ? *(ulong*)entry : *(uint*)entry;
    }

    /// <summary>
    /// ORs <paramref name="bits"/> into the entry as it is now in memory (so an entry reached twice ends
    /// with the union); writes only when a bit is missing, leaving already-set entries untouched.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetBits(byte* entry, bool wide, ulong bits)
    {
        Debug.Assert(entry != null, "entry in unbacked memory");
        if (wide)
        {
            Debug.Assert(((nuint)entry & WideAlignMask) == 0, "misaligned entry");
            ulong* p = (ulong*)entry;
            ulong value = *p;
            if ((value & bits) != bits)
                *p = value | bits;
        }
        else
        {
            Debug.Assert(((nuint)entry & NarrowAlignMask) == 0, "misaligned entry");
            uint* p = (uint*)entry;
            uint value = *p;
            uint narrowBits = (uint)bits;
            if ((value & narrowBits) != narrowBits)
                *p = value | narrowBits;
        }
    }
}
