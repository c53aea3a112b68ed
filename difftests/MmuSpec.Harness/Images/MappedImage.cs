using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using MmuSpec.Spec.Memory;

namespace MmuSpec.Harness.Images;

/// <summary>
/// A guest-physical memory image (file offset = gpa, as QEMU's <c>pmemsave</c> writes it) mapped
/// read-only into the process. Nothing is copied: <see cref="ReadQword"/> reads the mapped page
/// through a pointer pinned once for the image's lifetime, so a walk over a multi-GiB dump costs
/// a few nanoseconds per entry and touches only the pages it reads.
/// </summary>
public sealed class MappedImage : IPhysicalMemoryImage, IDisposable
{
    readonly MemoryMappedFile file;
    readonly MemoryMappedViewAccessor view;
    readonly SafeMemoryMappedViewHandle handle;
    readonly nint start;      // first byte of the file in the view
    bool pinned;

    MappedImage(string path, ulong length, MemoryMappedFile file, MemoryMappedViewAccessor view)
    {
        Path = path; Length = length; this.file = file; this.view = view;
        handle = view.SafeMemoryMappedViewHandle;
        // One AddRef for the whole lifetime instead of one per read (SafeBuffer.Read<T> does it per call).
        handle.DangerousAddRef(ref pinned);
        start = handle.DangerousGetHandle() + (nint)view.PointerOffset;
    }

    /// <summary>The file the image was mapped from.</summary>
    public string Path { get; }

    /// <summary>Size of the file in bytes: gpas at or above it are outside guest memory.</summary>
    public ulong Length { get; }

    /// <summary>
    /// The view's first byte. Valid until <see cref="Dispose"/>; for code that compares whole pages
    /// (e.g. the impl's copy-on-write view against the file).
    /// </summary>
    public nint Pointer => pinned ? start : throw new ObjectDisposedException(nameof(MappedImage));

    /// <summary>Maps <paramref name="path"/> read-only; a missing, empty or unreadable file is an <see cref="InputException"/>.</summary>
    public static MappedImage Open(string path)
    {
        if (Directory.Exists(path)) throw new InputException($"image '{path}' is a directory, not a memory image");
        if (!File.Exists(path)) throw new InputException($"image '{path}' does not exist");
        FileStream? stream = null;
        MemoryMappedFile? file = null;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            ulong length = (ulong)stream.Length;
            if (length == 0) throw new InputException($"image '{path}' is empty");
            file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            stream = null;   // owned by the mapping now
            var view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            return new MappedImage(path, length, file, view);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            file?.Dispose();
            stream?.Dispose();
            throw new InputException($"cannot map image '{path}': {e.Message}");
        }
    }

    /// <summary>The little-endian qword at an 8-aligned <paramref name="gpa"/> below <see cref="Length"/> - 7.</summary>
    public ulong ReadQword(ulong gpa)
    {
        ObjectDisposedException.ThrowIf(!pinned, this);
        if (Length < 8 || gpa > Length - 8)
            throw new ArgumentOutOfRangeException(nameof(gpa), gpa, $"qword at gpa {Hex.Format(gpa)} is beyond the {Length}-byte image");
        ulong v = (ulong)Marshal.ReadInt64(start + (nint)gpa);
        return BitConverter.IsLittleEndian ? v : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);
    }

    /// <summary>Copies <paramref name="destination"/>.Length bytes starting at <paramref name="gpa"/>.</summary>
    public void ReadBytes(ulong gpa, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(!pinned, this);
        if (gpa > Length || (ulong)destination.Length > Length - gpa)
            throw new ArgumentOutOfRangeException(nameof(gpa), gpa, $"{destination.Length} bytes at gpa {Hex.Format(gpa)} are beyond the {Length}-byte image");
        handle.ReadSpan((ulong)view.PointerOffset + gpa, destination);
    }

    public void Dispose()
    {
        if (pinned)
        {
            pinned = false;
            handle.DangerousRelease();
        }
        view.Dispose();
        file.Dispose();
    }

    public override string ToString() => $"{Path} ({Length} bytes)";
}
