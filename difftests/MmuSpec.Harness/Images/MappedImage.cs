using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using MmuSpec.Spec.Memory;

namespace MmuSpec.Harness.Images;

/// <summary>
/// A guest-physical memory image mapped read-only into the process: raw memory (file offset = gpa,
/// as QEMU's <c>pmemsave</c> writes it) or an ELF core (QEMU's <c>dump-guest-memory</c>: each PT_LOAD
/// segment maps its p_paddr range to a file range; <see cref="ElfCore"/>). Nothing is copied:
/// <see cref="ReadQword"/> reads the mapped page through a pointer pinned once for the image's
/// lifetime, so a walk over a multi-GiB dump costs a few nanoseconds per entry and touches only
/// the pages it reads. A file whose header shows another format is refused when opened.
/// </summary>
public sealed class MappedImage : IPhysicalMemoryImage, IDisposable
{
    readonly MemoryMappedFile file;
    readonly MemoryMappedViewAccessor view;
    readonly SafeMemoryMappedViewHandle handle;
    readonly nint start;      // first byte of the file in the view
    bool pinned;

    readonly ImageSegment[]? segments;   // sorted by gpa; null for raw memory
    int lastSegment;

    MappedImage(string path, ulong length, MemoryMappedFile file, MemoryMappedViewAccessor view)
    {
        Path = path; FileLength = length; Length = length; this.file = file; this.view = view;
        handle = view.SafeMemoryMappedViewHandle;
        // One AddRef for the whole lifetime instead of one per read (SafeBuffer.Read<T> does it per call).
        handle.DangerousAddRef(ref pinned);
        start = handle.DangerousGetHandle() + (nint)view.PointerOffset;
        try
        {
            Core = ElfCore.Inspect(path, length, (offset, count) =>
            {
                var bytes = new byte[count];
                handle.ReadSpan((ulong)view.PointerOffset + offset, bytes.AsSpan());
                return bytes;
            });
        }
        catch
        {
            pinned = false;
            handle.DangerousRelease();
            throw;
        }
        if (Core is { } core)
        {
            segments = [.. core.Segments];
            Length = segments[^1].End;
        }
    }

    /// <summary>The file the image was mapped from.</summary>
    public string Path { get; }

    /// <summary>
    /// The top of guest-physical memory the image holds: the file's size for raw memory (gpas at or
    /// above it are outside guest memory), the end of the highest segment for an ELF core.
    /// </summary>
    public ulong Length { get; }

    /// <summary>Size of the file in bytes.</summary>
    public ulong FileLength { get; }

    /// <summary>The ELF core's layout and QEMU's register notes; null for raw memory.</summary>
    public ElfCoreInfo? Core { get; }

    /// <summary>Where guest memory lies in the file: one segment at offset 0 for raw memory, the PT_LOAD segments (by gpa) for an ELF core.</summary>
    public IReadOnlyList<ImageSegment> Segments => segments ?? [new ImageSegment(0, 0, Length)];

    /// <summary>The guest memory the image backs: whole 4 KiB pages from gpa 0 (raw), or inside each segment (ELF core).</summary>
    public IReadOnlyList<Memslot> Memslots => segments is null
        ? [new Memslot(0, Length >> Memslot.PageShift)]
        : ElfCore.Memslots(segments);

    /// <summary>How the image is described to the user.</summary>
    public string Describe() => Core is { } core
        ? $"image {Path} ({core.Describe()}; {Hex.Size(Memslots.Aggregate(0UL, (sum, s) => sum + (s.Pages << Memslot.PageShift)))} of memory up to gpa {Hex.Format(Length)})"
        : $"image {Path} ({Hex.Size(Length)}, {Length} bytes)";

    /// <summary>The file offset holding <paramref name="bytes"/> bytes at <paramref name="gpa"/>, or null when the image holds none there.</summary>
    public ulong? FileOffset(ulong gpa, ulong bytes)
    {
        if (segments is null) return gpa <= Length && bytes <= Length - gpa ? gpa : null;
        var s = segments[lastSegment];
        if (gpa < s.Gpa || gpa >= s.End)
        {
            int lo = 0, hi = segments.Length - 1, found = -1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >>> 1;
                if (segments[mid].Gpa <= gpa) { found = mid; lo = mid + 1; } else hi = mid - 1;
            }
            if (found < 0) return null;
            lastSegment = found;
            s = segments[found];
        }
        return gpa >= s.Gpa && bytes <= s.End - gpa ? s.FileOffset + (gpa - s.Gpa) : null;
    }

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
            try { return new MappedImage(path, length, file, view); }
            catch { view.Dispose(); throw; }
        }
        catch (InputException)
        {
            file?.Dispose();
            stream?.Dispose();
            throw;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            file?.Dispose();
            stream?.Dispose();
            throw new InputException($"cannot map image '{path}': {e.Message}");
        }
    }

    /// <summary>The little-endian qword at an 8-aligned <paramref name="gpa"/> the image holds.</summary>
    public ulong ReadQword(ulong gpa)
    {
        ObjectDisposedException.ThrowIf(!pinned, this);
        ulong offset = FileOffset(gpa, 8)
            ?? throw new ArgumentOutOfRangeException(nameof(gpa), gpa, $"qword at gpa {Hex.Format(gpa)} is not in the image");
        ulong v = (ulong)Marshal.ReadInt64(start + (nint)offset);
        return BitConverter.IsLittleEndian ? v : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);
    }

    /// <summary>Copies <paramref name="destination"/>.Length bytes starting at <paramref name="gpa"/> (within one segment of an ELF core).</summary>
    public void ReadBytes(ulong gpa, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(!pinned, this);
        ulong offset = FileOffset(gpa, (ulong)destination.Length)
            ?? throw new ArgumentOutOfRangeException(nameof(gpa), gpa, $"{destination.Length} bytes at gpa {Hex.Format(gpa)} are not in the image");
        handle.ReadSpan((ulong)view.PointerOffset + offset, destination);
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

    public override string ToString() => Core is null ? $"{Path} ({Length} bytes)" : $"{Path} ({Core.Describe()})";
}
