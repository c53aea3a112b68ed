using System.Buffers.Binary;
using System.Text;
using MmuSpec.Spec.Memory;

namespace MmuSpec.Harness.Images;

/// <summary>
/// <see cref="Bytes"/> bytes of guest-physical memory from <see cref="Gpa"/> stored at <see cref="FileOffset"/>:
/// a PT_LOAD segment of an ELF core (p_paddr, p_offset, p_filesz), or a whole raw image (gpa = offset).
/// </summary>
public sealed record ImageSegment(ulong Gpa, ulong FileOffset, ulong Bytes)
{
    public ulong End => Gpa + Bytes;
}

/// <summary>
/// The registers QEMU's <c>dump-guest-memory</c> stores per vCPU in a note named "QEMU" (type 0):
/// its QEMUCPUState holds the general registers, RIP, RFLAGS, the segments and CR0..CR4 — not EFER.
/// </summary>
public sealed record QemuCpuState(int Cpu, ulong Cr0, ulong Cr3, ulong Cr4, ulong Rflags);

/// <summary>What an ELF core holds: its class and machine, the memory segments and QEMU's vCPU notes.</summary>
public sealed record ElfCoreInfo(bool Is64, ushort Machine, IReadOnlyList<ImageSegment> Segments, IReadOnlyList<QemuCpuState> Cpus)
{
    public const ushort EmI386 = 3, EmX86_64 = 62;

    public string Describe() =>
        $"ELF{(Is64 ? 64 : 32)} core ({(Machine == EmX86_64 ? "x86-64" : "i386")}), {Segments.Count} PT_LOAD segment{(Segments.Count == 1 ? "" : "s")}"
        + (Cpus.Count > 0 ? $", QEMU notes for {Cpus.Count} vCPU{(Cpus.Count == 1 ? "" : "s")}" : ", no QEMU note");
}

/// <summary>
/// Recognizes what a memory-image file is from its first bytes: raw guest-physical memory (file
/// offset = gpa, QEMU's <c>pmemsave</c>), an ELF core (QEMU's <c>dump-guest-memory</c>: PT_LOAD
/// segments map p_paddr to file offsets, "QEMU" notes carry each vCPU's control registers), or a
/// format that is neither (compressed, kdump, Windows dump, an ELF that is not a core), which is
/// refused: walking its bytes as memory would give garbage with a straight face.
/// </summary>
public static class ElfCore
{
    const uint PtLoad = 1, PtNote = 4;
    const ushort EtCore = 4, PnXnum = 0xffff;
    // QEMUCPUState: version, size, 16 GPRs, rip, rflags (at 144), 10 segments of 24 bytes, then cr[5] at 392.
    const int RflagsOffset = 144, CrOffset = 392, CrEnd = CrOffset + 5 * 8;

    /// <summary>
    /// Null for raw memory; the core's layout for an ELF core; an <see cref="InputException"/> for a
    /// file whose header shows another format. <paramref name="read"/>(offset, count) reads the file.
    /// </summary>
    public static ElfCoreInfo? Inspect(string path, ulong length, Func<ulong, int, byte[]> read)
    {
        byte[] head = read(0, (int)Math.Min(length, 64));
        if (OtherFormat(head) is { } other)
            throw new InputException($"image '{path}' is {other}, not raw guest memory or an ELF core: convert it first (QEMU: pmemsave, or dump-guest-memory without -z/-l/-s/-w)");
        if (head.Length < 4 || head[0] != 0x7f || head[1] != (byte)'E' || head[2] != (byte)'L' || head[3] != (byte)'F') return null;
        return Parse(path, length, read, head);
    }

    static string? OtherFormat(byte[] h)
    {
        bool Starts(params byte[] magic) => h.Length >= magic.Length && h.AsSpan(0, magic.Length).SequenceEqual(magic);
        if (Starts(0x1f, 0x8b)) return "gzip-compressed";
        if (Starts(0x28, 0xb5, 0x2f, 0xfd)) return "zstd-compressed";
        if (Starts(0xfd, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0)) return "xz-compressed";
        if (Starts((byte)'B', (byte)'Z', (byte)'h')) return "bzip2-compressed";
        if (Starts(0x04, 0x22, 0x4d, 0x18)) return "lz4-compressed";
        if (Starts("KDUMP   "u8.ToArray())) return "a kdump-compressed dump (dump-guest-memory -z/-l/-s)";
        if (Starts("PAGEDU64"u8.ToArray()) || Starts("PAGEDUMP"u8.ToArray())) return "a Windows crash dump (dump-guest-memory -w)";
        if (Starts("QEVM"u8.ToArray())) return "a QEMU migration or savevm stream";
        return null;
    }

    static ElfCoreInfo Parse(string path, ulong length, Func<ulong, int, byte[]> read, byte[] h)
    {
        string Bad(string what) => $"image '{path}' is an ELF file but {what}";
        if (h.Length < 52) throw new InputException(Bad("its header is truncated"));
        bool is64 = h[4] switch { 1 => false, 2 => true, _ => throw new InputException(Bad($"of unknown class {h[4]}")) };
        if (h[5] != 1) throw new InputException(Bad("big-endian: x86 dumps are little-endian"));
        if (is64 && h.Length < 64) throw new InputException(Bad("its header is truncated"));
        ushort type = U16(h, 16), machine = U16(h, 18);
        if (type != EtCore)
            throw new InputException(Bad($"not a core dump (e_type {type}{(type == 2 ? ", an executable such as vmlinux" : "")}): give a memory dump (QEMU dump-guest-memory or pmemsave)"));
        if (machine is not (ElfCoreInfo.EmI386 or ElfCoreInfo.EmX86_64))
            throw new InputException(Bad($"a core of machine {machine}, not x86 (3 or 62)"));

        ulong phoff = is64 ? U64(h, 32) : U32(h, 28);
        ulong shoff = is64 ? U64(h, 40) : U32(h, 32);
        int phentsize = U16(h, is64 ? 54 : 42);
        uint phnum = U16(h, is64 ? 56 : 44);
        if (phnum == PnXnum)
        {
            // More than 0xfffe program headers: the count is in section header 0's sh_info.
            byte[] sh = ReadAt(path, length, read, shoff, is64 ? 64 : 40, "section header 0");
            phnum = U32(sh, is64 ? 44 : 28);
        }
        if (phentsize < (is64 ? 56 : 32)) throw new InputException(Bad($"its program headers are {phentsize} bytes"));

        var segments = new List<ImageSegment>();
        var cpus = new List<QemuCpuState>();
        for (uint i = 0; i < phnum; i++)
        {
            byte[] ph = ReadAt(path, length, read, phoff + (ulong)i * (ulong)phentsize, is64 ? 56 : 32, $"program header {i}");
            uint ptype = U32(ph, 0);
            ulong offset = is64 ? U64(ph, 8) : U32(ph, 4);
            ulong paddr = is64 ? U64(ph, 24) : U32(ph, 12);
            ulong filesz = is64 ? U64(ph, 32) : U32(ph, 16);
            if (filesz == 0 || ptype is not (PtLoad or PtNote)) continue;
            if (offset > length || filesz > length - offset)
                throw new InputException($"image '{path}': ELF core truncated: program header {i} needs bytes [{Hex.Format(offset)}, {Hex.Format(offset + filesz)}) of a {length}-byte file");
            if (ptype == PtLoad)
            {
                if (paddr + filesz < paddr) throw new InputException($"image '{path}': ELF segment {i} at gpa {Hex.Format(paddr)} wraps past 2^64");
                segments.Add(new ImageSegment(paddr, offset, filesz));
            }
            else if (filesz <= 1 << 24)
                ReadNotes(read(offset, (int)filesz), cpus);
        }
        segments.Sort((a, b) => a.Gpa.CompareTo(b.Gpa));
        for (int i = 1; i < segments.Count; i++)
            if (segments[i].Gpa < segments[i - 1].End)
                throw new InputException($"image '{path}': ELF segments overlap at gpa {Hex.Format(segments[i].Gpa)}");
        if (segments.Count == 0) throw new InputException($"image '{path}' is an ELF core without memory (no PT_LOAD segment with file bytes)");
        return new ElfCoreInfo(is64, machine, segments, cpus);
    }

    /// <summary>Each "QEMU" note (one per vCPU, in order), as QEMU writes it: 12-byte header, name and desc padded to 4 bytes.</summary>
    static void ReadNotes(byte[] notes, List<QemuCpuState> cpus)
    {
        int at = 0;
        while (at + 12 <= notes.Length)
        {
            uint namesz = U32(notes, at), descsz = U32(notes, at + 4), type = U32(notes, at + 8);
            long name = at + 12, desc = name + Align4(namesz), next = desc + Align4(descsz);
            if (next > notes.Length || next <= at) return;
            bool qemu = namesz == 5 && type == 0 && Encoding.ASCII.GetString(notes, (int)name, 4) == "QEMU";
            if (qemu && descsz >= CrEnd)
            {
                int d = (int)desc;
                cpus.Add(new QemuCpuState(cpus.Count, U64(notes, d + CrOffset), U64(notes, d + CrOffset + 24), U64(notes, d + CrOffset + 32), U64(notes, d + RflagsOffset)));
            }
            at = (int)next;
        }
    }

    static long Align4(uint n) => ((long)n + 3) & ~3L;

    static byte[] ReadAt(string path, ulong length, Func<ulong, int, byte[]> read, ulong offset, int count, string what) =>
        offset <= length && (ulong)count <= length - offset ? read(offset, count)
            : throw new InputException($"image '{path}': ELF core truncated: its {what} at offset {Hex.Format(offset)} is beyond the {length}-byte file");

    static ushort U16(byte[] b, int at) => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(at));
    static uint U32(byte[] b, int at) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at));
    static ulong U64(byte[] b, int at) => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(at));

    /// <summary>The memslots an ELF core's segments back: every whole 4 KiB page inside a segment.</summary>
    public static List<Memslot> Memslots(IEnumerable<ImageSegment> segments)
    {
        var slots = new List<Memslot>();
        foreach (var s in segments)
        {
            ulong first = (s.Gpa + 0xFFF) >> Memslot.PageShift, end = s.End >> Memslot.PageShift;
            if (end <= first) continue;
            // Adjacent segments make one slot, as one stretch of RAM.
            if (slots.Count > 0 && slots[^1].EndGfn == first) slots[^1] = slots[^1].WithPages(slots[^1].Pages + (end - first));
            else slots.Add(new Memslot(first, end - first));
        }
        return slots;
    }
}
