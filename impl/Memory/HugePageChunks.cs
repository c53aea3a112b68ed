using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MmuSpec.Impl.Memory;

/// <summary>
/// 2 MiB chunks of fresh anonymous memory, aligned to 2 MiB and advised for transparent huge pages
/// (<c>madvise(MADV_HUGEPAGE)</c>), for <see cref="NativePagePool.AllocateHugePageChunk"/>. The kernel reaches
/// its own page tables through a direct map held in huge TLB entries; a chunk is this process's nearest
/// analogue: one TLB entry for 512 table pages where THP is on (<c>always</c>, or <c>madvise</c>, the default
/// of many distributions). Where it is off, the kernel lacks THP or the OS is not Linux, a chunk is ordinary
/// memory: same contract, 4 KiB pages. The pool owns the counting; this type only maps, advises and unmaps.
/// </summary>
internal static unsafe partial class HugePageChunks
{
    public const int ChunkPages = 512;
    public const nuint ChunkBytes = (nuint)ChunkPages * NativePagePool.PageSize;

    // Linux's values for x86-64 and arm64 (asm-generic/mman-common.h); other architectures take the fallback.
    private const int ProtRead = 0x1, ProtWrite = 0x2;
    private const int MapPrivate = 0x02, MapAnonymous = 0x20;
    private const int MadvHugePage = 14;
    private static readonly nint MapFailed = -1;

    /// <summary>True where chunks come from mmap and are advised; otherwise from the C heap, never advised.</summary>
    public static bool UsesMmap { get; } = OperatingSystem.IsLinux()
        && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;

    /// <summary>
    /// A zeroed chunk aligned to <see cref="ChunkBytes"/>; <paramref name="advised"/> says whether the kernel
    /// accepted the huge-page advice (false where it has no THP: the chunk is still good).
    /// </summary>
    /// <exception cref="OutOfMemoryException">The OS refused the mapping.</exception>
    public static byte* Allocate(out bool advised)
    {
        advised = false;
        if (!UsesMmap)
        {
            byte* heap = (byte*)NativeMemory.AlignedAlloc(ChunkBytes, ChunkBytes); // throws OutOfMemoryException on failure
            NativeMemory.Clear(heap, ChunkBytes);
            return heap;
        }
        // mmap aligns to 4 KiB only: map twice the size and unmap the ends, leaving one aligned chunk.
        nuint mapped = 2 * ChunkBytes;
        nint start = mmap(0, mapped, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (start == MapFailed)
            throw new OutOfMemoryException($"mmap of {mapped} bytes failed (errno {Marshal.GetLastPInvokeError()}).");
        nuint aligned = ((nuint)start + ChunkBytes - 1) & ~(ChunkBytes - 1);
        nuint head = aligned - (nuint)start, tail = mapped - head - ChunkBytes;
        if (head != 0)
            Unmap((nint)start, head);
        if (tail != 0)
            Unmap((nint)(aligned + ChunkBytes), tail);
        Debug.Assert((aligned & (ChunkBytes - 1)) == 0, "chunk is not aligned to its size");
        // Before the first touch, so that the first write faults in one huge page (fresh mappings read as zero).
        advised = madvise((nint)aligned, ChunkBytes, MadvHugePage) == 0;
        return (byte*)aligned;
    }

    /// <summary>Returns a chunk from <see cref="Allocate"/>.</summary>
    public static void Free(byte* chunk)
    {
        Debug.Assert(((nuint)chunk & (ChunkBytes - 1)) == 0, "freeing a chunk that is not aligned to its size");
        if (UsesMmap)
            Unmap((nint)chunk, ChunkBytes);
        else
            NativeMemory.AlignedFree(chunk);
    }

    private static void Unmap(nint address, nuint length)
    {
        // munmap fails only for arguments this type never passes (unaligned, or not a mapping).
        int result = munmap(address, length);
        Debug.Assert(result == 0, "munmap failed");
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int munmap(nint address, nuint length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(nint address, nuint length, int advice);
}
