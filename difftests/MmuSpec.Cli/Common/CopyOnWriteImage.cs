using System.IO.MemoryMappedFiles;
using MmuSpec.Harness.Images;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli;

/// <summary>
/// The impl's view of a memory image: the file mapped a second time, copy-on-write, and registered
/// as external memslots of a <see cref="GuestPhysicalMemory"/> (which holds the view's buffer while a slot
/// uses it), one or more per segment (the whole
/// file for raw memory, each PT_LOAD segment of an ELF core). The impl's A/D writes land in private
/// copies of the pages they touch; the file never changes. The walk's trace names the entries it
/// changed (<see cref="ImplWalk"/>), and <see cref="Restore"/> puts them back. Slots are at most
/// 1 GiB each, so every slot's bytes are one span.
/// </summary>
public sealed class CopyOnWriteImage : IDisposable
{
    const ulong SlotBytes = 1UL << 30;
    const int Page = 4096;

    readonly MemoryMappedFile file;
    readonly MemoryMappedViewAccessor view;
    readonly NativePagePool pool = new();

    CopyOnWriteImage(MappedImage pristine, MemoryMappedFile file, MemoryMappedViewAccessor view)
    {
        this.file = file; this.view = view;
        Memory = new GuestPhysicalMemory(pool);
        // The view may start before offset 0 of the file (the mapping is page aligned): offsets are the file's plus that.
        ulong viewStart = (ulong)view.PointerOffset;
        foreach (var seg in pristine.Segments)
        {
            // Whole pages only: a partial page is not guest memory, as in the spec (MappedImage.Memslots).
            ulong first = (seg.Gpa + 0xFFF) >> 12, end = seg.End >> 12;
            ulong host = viewStart + seg.FileOffset + ((first << 12) - seg.Gpa);
            for (ulong gfn = first; gfn < end; gfn += SlotBytes >> 12)
                Memory.AddExternalSlot(gfn, Math.Min(SlotBytes >> 12, end - gfn), view.SafeMemoryMappedViewHandle, host + ((gfn - first) << 12));
        }
    }

    /// <summary>Guest memory for the impl, backed by the copy-on-write mapping.</summary>
    public GuestPhysicalMemory Memory { get; }

    /// <summary>Maps the file behind <paramref name="pristine"/> again, copy-on-write.</summary>
    public static CopyOnWriteImage Open(MappedImage pristine)
    {
        if (pristine.Length < Page) throw new InputException($"image '{pristine.Path}' is {pristine.Length} bytes: less than one 4 KiB page");
        // The impl reads entries through host pointers that must be 8-byte aligned (GuestPhysicalMemory asserts it):
        // a gpa's host address is the segment's file offset plus (gpa - segment gpa), so the two must agree mod 8.
        if (pristine.Segments.FirstOrDefault(s => ((s.FileOffset - s.Gpa) & 7) != 0) is { } odd)
            throw new InputException($"image '{pristine.Path}': the segment at gpa {Hex.Format(odd.Gpa)} is at file offset {Hex.Format(odd.FileOffset)}, not 8-byte aligned with its gpa: the impl cannot read it in place (use --engine spec)");
        // Raw memory: whole pages (a partial last page is not guest memory); an ELF core: the whole file.
        ulong viewBytes = pristine.Core is null ? pristine.FileLength & ~0xFFFUL : pristine.FileLength;
        var stream = new FileStream(pristine.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        MemoryMappedFile? file = null;
        try
        {
            file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: false);
            var view = file.CreateViewAccessor(0, (long)viewBytes, MemoryMappedFileAccess.CopyOnWrite);
            return new CopyOnWriteImage(pristine, file, view);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            if (file is null) stream.Dispose(); else file.Dispose();
            throw new InputException($"cannot map image '{pristine.Path}' copy-on-write: {e.Message}");
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
        Memory.Dispose(); // releases the view's buffer
        view.Dispose();
        file.Dispose();
        pool.Dispose();
    }
}
