using System.Collections.Immutable;
using System.IO.MemoryMappedFiles;
using MmuSpec.Harness.Images;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli;

/// <summary>
/// The impl's view of a memory image: the file mapped a second time, copy-on-write, and registered
/// as external memslots of a <see cref="GuestPhysicalMemory"/>, one or more per segment (the whole
/// file for raw memory, each PT_LOAD segment of an ELF core). The impl's A/D writes land in private
/// copies of the pages they touch; the file never changes. Slots are at most 1 GiB each.
/// </summary>
public sealed unsafe class CopyOnWriteImage : IDisposable
{
    const ulong SlotBytes = 1UL << 30;
    const int Page = 4096;

    readonly MemoryMappedFile file;
    readonly MemoryMappedViewAccessor view;
    readonly NativePagePool pool = new();
    readonly MappedImage pristine;
    readonly ulong viewBytes;
    byte* pointer;

    CopyOnWriteImage(MappedImage pristine, MemoryMappedFile file, MemoryMappedViewAccessor view, ulong viewBytes)
    {
        this.pristine = pristine; this.file = file; this.view = view; this.viewBytes = viewBytes;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        pointer += view.PointerOffset;
        Memory = new GuestPhysicalMemory(pool);
        foreach (var seg in pristine.Segments)
        {
            // Whole pages only: a partial page is not guest memory, as in the spec (MappedImage.Memslots).
            ulong first = (seg.Gpa + 0xFFF) >> 12, end = seg.End >> 12;
            byte* host = pointer + seg.FileOffset + ((first << 12) - seg.Gpa);
            for (ulong gfn = first; gfn < end; gfn += SlotBytes >> 12)
                Memory.AddExternalSlot(gfn, Math.Min(SlotBytes >> 12, end - gfn), host + ((gfn - first) << 12));
        }
    }

    /// <summary>Guest memory for the impl, backed by the copy-on-write mapping.</summary>
    public GuestPhysicalMemory Memory { get; }

    /// <summary>How the last <see cref="Changed"/> found its candidates: "pagemap" or "full compare".</summary>
    public string LastDiffMethod { get; private set; } = "";

    /// <summary>Maps the file behind <paramref name="pristine"/> again, copy-on-write.</summary>
    public static CopyOnWriteImage Open(MappedImage pristine)
    {
        if (pristine.Length < Page) throw new InputException($"image '{pristine.Path}' is {pristine.Length} bytes: less than one 4 KiB page");
        if (pristine.Segments.FirstOrDefault(s => (s.FileOffset & 7) != 0) is { } odd)
            throw new InputException($"image '{pristine.Path}': the segment at gpa {Hex.Format(odd.Gpa)} starts at file offset {Hex.Format(odd.FileOffset)}, not 8-byte aligned: the impl cannot read it in place (use --engine spec)");
        // Raw memory: whole pages (a partial last page is not guest memory); an ELF core: the whole file.
        ulong viewBytes = pristine.Core is null ? pristine.FileLength & ~0xFFFUL : pristine.FileLength;
        var stream = new FileStream(pristine.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        MemoryMappedFile? file = null;
        try
        {
            file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: false);
            var view = file.CreateViewAccessor(0, (long)viewBytes, MemoryMappedFileAccess.CopyOnWrite);
            return new CopyOnWriteImage(pristine, file, view, viewBytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            if (file is null) stream.Dispose(); else file.Dispose();
            throw new InputException($"cannot map image '{pristine.Path}' copy-on-write: {e.Message}");
        }
    }

    /// <summary>
    /// The entries the impl changed: the copy-on-write view against the file. Only pages the kernel
    /// has copied can differ, and /proc/self/pagemap names them (present, no longer a file page), so
    /// a walk over a multi-GiB image compares a handful of pages; without pagemap every page is compared.
    /// </summary>
    public ImmutableArray<EntryUpdate> Changed(GuestPhysicalMemory memory, int entryBytes)
    {
        var changes = ImmutableArray.CreateBuilder<EntryUpdate>();
        ulong bytes = (viewBytes + Page - 1) & ~(ulong)(Page - 1);
        var copied = CopiedPages(bytes);
        LastDiffMethod = copied is null ? "full compare" : "pagemap";
        IEnumerable<ulong> pages = copied ?? Range(bytes);
        foreach (ulong offset in pages)
            foreach (var seg in pristine.Segments)
            {
                // The part of this file page that holds the segment's memory, compared at its gpas.
                ulong from = Math.Max(offset, seg.FileOffset), to = Math.Min(Math.Min(offset + Page, seg.FileOffset + seg.Bytes), viewBytes);
                if (from >= to) continue;
                var before = new ReadOnlySpan<byte>((byte*)pristine.Pointer + from, (int)(to - from));
                var after = new ReadOnlySpan<byte>(pointer + from, (int)(to - from));
                EntryDiff.Compare(before, after, seg.Gpa + (from - seg.FileOffset), entryBytes, changes);
            }
        return changes.ToImmutable();
    }

    static IEnumerable<ulong> Range(ulong bytes)
    {
        for (ulong offset = 0; offset < bytes; offset += Page) yield return offset;
    }

    /// <summary>Offsets of the view's pages that are private copies, or null when pagemap cannot be read.</summary>
    List<ulong>? CopiedPages(ulong bytes)
    {
        const ulong PresentBit = 1UL << 63, FilePageBit = 1UL << 61;
        try
        {
            using var pagemap = new FileStream("/proc/self/pagemap", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
            ulong firstPage = (ulong)pointer / Page;
            ulong count = bytes / Page;
            var result = new List<ulong>();
            var buffer = new byte[8 * 8192];
            for (ulong done = 0; done < count;)
            {
                int n = (int)Math.Min(8192UL, count - done);
                pagemap.Seek((long)((firstPage + done) * 8), SeekOrigin.Begin);
                pagemap.ReadExactly(buffer, 0, n * 8);
                for (int i = 0; i < n; i++)
                {
                    ulong e = BitConverter.ToUInt64(buffer, i * 8);
                    if ((e & PresentBit) != 0 && (e & FilePageBit) == 0) result.Add((done + (ulong)i) * Page);
                }
                done += (ulong)n;
            }
            return result;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
    }

    /// <summary>Puts back the words a walk changed, so the next walk starts from the file again.</summary>
    public void Restore(IEnumerable<EntryUpdate> changes, int entryBytes)
    {
        foreach (var u in changes)
            _ = entryBytes == 8 ? Memory.TryWrite64(u.Gpa, u.Before) : Memory.TryWrite32(u.Gpa, (uint)u.Before);
    }

    public void Dispose()
    {
        Memory.Dispose();
        if (pointer != null)
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            pointer = null;
        }
        view.Dispose();
        file.Dispose();
        pool.Dispose();
    }
}
