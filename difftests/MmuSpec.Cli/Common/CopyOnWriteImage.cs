using System.Collections.Immutable;
using System.IO.MemoryMappedFiles;
using MmuSpec.Harness.Images;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli;

/// <summary>
/// The impl's view of a memory image: the file mapped a second time, copy-on-write, and registered
/// as external memslots of a <see cref="GuestPhysicalMemory"/>. The impl's A/D writes land in
/// private copies of the pages they touch; the file never changes. Slots are at most 1 GiB each so
/// that every slot can be compared as one span against the read-only <see cref="MappedImage"/>.
/// </summary>
public sealed unsafe class CopyOnWriteImage : IDisposable
{
    const ulong SlotBytes = 1UL << 30;
    const int Page = 4096;

    readonly MemoryMappedFile file;
    readonly MemoryMappedViewAccessor view;
    readonly NativePagePool pool = new();
    readonly MappedImage pristine;
    byte* pointer;

    CopyOnWriteImage(MappedImage pristine, MemoryMappedFile file, MemoryMappedViewAccessor view)
    {
        this.pristine = pristine; this.file = file; this.view = view;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        pointer += view.PointerOffset;
        Memory = new GuestPhysicalMemory(pool);
        ulong pages = pristine.Length >> 12;   // a partial last page is not guest memory, as in the spec
        for (ulong gfn = 0; gfn < pages; gfn += SlotBytes >> 12)
            Memory.AddExternalSlot(gfn, Math.Min(SlotBytes >> 12, pages - gfn), pointer + (gfn << 12));
    }

    /// <summary>Guest memory for the impl, backed by the copy-on-write mapping.</summary>
    public GuestPhysicalMemory Memory { get; }

    /// <summary>How the last <see cref="Changed"/> found its candidates: "pagemap" or "full compare".</summary>
    public string LastDiffMethod { get; private set; } = "";

    /// <summary>Maps the file behind <paramref name="pristine"/> again, copy-on-write.</summary>
    public static CopyOnWriteImage Open(MappedImage pristine)
    {
        if (pristine.Length < Page) throw new InputException($"image '{pristine.Path}' is {pristine.Length} bytes: less than one 4 KiB page");
        var stream = new FileStream(pristine.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        MemoryMappedFile? file = null;
        try
        {
            file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: false);
            var view = file.CreateViewAccessor(0, (long)(pristine.Length & ~0xFFFUL), MemoryMappedFileAccess.CopyOnWrite);
            return new CopyOnWriteImage(pristine, file, view);
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
        ulong bytes = pristine.Length & ~0xFFFUL;
        var copied = CopiedPages(bytes);
        LastDiffMethod = copied is null ? "full compare" : "pagemap";
        IEnumerable<ulong> pages = copied ?? Range(bytes);
        foreach (ulong offset in pages)
        {
            var before = new ReadOnlySpan<byte>((byte*)pristine.Pointer + offset, Page);
            var after = new ReadOnlySpan<byte>(pointer + offset, Page);
            EntryDiff.Compare(before, after, offset, entryBytes, changes);
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
