using System.Buffers.Binary;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// ELF cores as QEMU's dump-guest-memory writes them: PT_LOAD segments map gpas (p_paddr) to file
/// offsets, "QEMU" notes carry each vCPU's CR0..CR4 and RFLAGS. The cores are built here by a
/// small writer; any other non-raw file is refused when opened.
/// </summary>
public sealed class ElfCoreTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("mmuspec-elf-tests-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    string File(string name) => Path.Combine(dir, name);

    /// <summary>One vCPU's registers in QEMU's note.</summary>
    sealed record Cpu(ulong Cr0, ulong Cr3, ulong Cr4, ulong Rflags);

    /// <summary>
    /// Writes an ELF core: the header, a PT_NOTE and one PT_LOAD per segment, the notes ("CORE"
    /// filler then one "QEMU" note per vCPU, QEMUCPUState with cr[] at 392), then the segments' bytes
    /// at page-aligned offsets in reverse gpa order (so file offset is never the gpa).
    /// </summary>
    static void WriteCore(string path, bool is64, ushort machine, IReadOnlyList<(ulong Gpa, byte[] Bytes)> segments, IReadOnlyList<Cpu> cpus, ushort type = 4)
    {
        int ehsize = is64 ? 64 : 52, phentsize = is64 ? 56 : 32;
        int phnum = 1 + segments.Count;
        var notes = new List<byte>();
        void Note(string name, uint noteType, byte[] desc)
        {
            var head = new byte[12];
            BinaryPrimitives.WriteUInt32LittleEndian(head, (uint)name.Length + 1);
            BinaryPrimitives.WriteUInt32LittleEndian(head.AsSpan(4), (uint)desc.Length);
            BinaryPrimitives.WriteUInt32LittleEndian(head.AsSpan(8), noteType);
            notes.AddRange(head);
            var n = new byte[(name.Length + 1 + 3) & ~3];
            System.Text.Encoding.ASCII.GetBytes(name).CopyTo(n, 0);
            notes.AddRange(n);
            notes.AddRange(desc);
            notes.AddRange(new byte[((desc.Length + 3) & ~3) - desc.Length]);
        }
        foreach (var c in cpus)
        {
            Note("CORE", 1, new byte[is64 ? 336 : 144]);   // NT_PRSTATUS: not read
            var state = new byte[440];
            BinaryPrimitives.WriteUInt32LittleEndian(state, 1);
            BinaryPrimitives.WriteUInt32LittleEndian(state.AsSpan(4), 440);
            BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(144), c.Rflags);
            BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(392), c.Cr0);
            BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(392 + 16), 0xdead);   // CR2
            BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(392 + 24), c.Cr3);
            BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(392 + 32), c.Cr4);
            Note("QEMU", 0, state);
        }
        ulong notesAt = (ulong)(ehsize + phnum * phentsize);
        ulong dataAt = (notesAt + (ulong)notes.Count + 0xFFF) & ~0xFFFUL;
        var offsets = new ulong[segments.Count];
        ulong at = dataAt;
        for (int i = segments.Count - 1; i >= 0; i--) { offsets[i] = at; at += ((ulong)segments[i].Bytes.Length + 0xFFF) & ~0xFFFUL; }

        var file = new byte[at];
        var h = file.AsSpan();
        h[0] = 0x7f; h[1] = (byte)'E'; h[2] = (byte)'L'; h[3] = (byte)'F'; h[4] = is64 ? (byte)2 : (byte)1; h[5] = 1; h[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], type);
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], machine);
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        if (is64)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(h[32..], (ulong)ehsize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[52..], (ushort)ehsize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[54..], (ushort)phentsize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[56..], (ushort)phnum);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(h[28..], (uint)ehsize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[40..], (ushort)ehsize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[42..], (ushort)phentsize);
            BinaryPrimitives.WriteUInt16LittleEndian(h[44..], (ushort)phnum);
        }
        void Phdr(int i, uint ptype, ulong offset, ulong paddr, ulong size)
        {
            var p = file.AsSpan(ehsize + i * phentsize, phentsize);
            BinaryPrimitives.WriteUInt32LittleEndian(p, ptype);
            if (is64)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(p[8..], offset);
                BinaryPrimitives.WriteUInt64LittleEndian(p[24..], paddr);
                BinaryPrimitives.WriteUInt64LittleEndian(p[32..], size);
                BinaryPrimitives.WriteUInt64LittleEndian(p[40..], size);
            }
            else
            {
                BinaryPrimitives.WriteUInt32LittleEndian(p[4..], (uint)offset);
                BinaryPrimitives.WriteUInt32LittleEndian(p[12..], (uint)paddr);
                BinaryPrimitives.WriteUInt32LittleEndian(p[16..], (uint)size);
                BinaryPrimitives.WriteUInt32LittleEndian(p[20..], (uint)size);
            }
        }
        Phdr(0, 4, notesAt, 0, (ulong)notes.Count);
        notes.ToArray().CopyTo(file, (int)notesAt);
        for (int i = 0; i < segments.Count; i++)
        {
            Phdr(1 + i, 1, offsets[i], segments[i].Gpa, (ulong)segments[i].Bytes.Length);
            segments[i].Bytes.CopyTo(file, (int)offsets[i]);
        }
        System.IO.File.WriteAllBytes(path, file);
    }

    static void Put64(byte[] segment, ulong offset, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(segment.AsSpan((int)offset), value);

    /// <summary>
    /// A 4-level guest: low RAM [0, 0xa0000) and RAM [0x100000, 0x200000) with a hole between. Tables
    /// at 0x100000.. map gva 0x400000 to 0x5000 (4K, NX) and give gva 0x600000 a PT in the hole.
    /// </summary>
    static (ulong Gpa, byte[] Bytes)[] Long4Segments()
    {
        var low = new byte[0xa0000];
        var high = new byte[0x100000];
        Put64(high, 0x0000, 0x101003);                      // PML4[0] -> PDPT 0x101000 (P W, A clear)
        Put64(high, 0x1000, 0x102003);                      // PDPT[0] -> PD 0x102000
        Put64(high, 0x2000 + 2 * 8, 0x103003);              // PD[2] (0x400000) -> PT 0x103000
        Put64(high, 0x2000 + 3 * 8, 0xb0003);               // PD[3] (0x600000) -> a PT in the hole
        Put64(high, 0x3000, 0x8000000000005003);            // PT[0] -> 0x5000, XD
        return [(0, low), (0x100000, high)];
    }

    static readonly Cpu Linux64 = new(0x80050033, 0x100000, 0x3406f0, 0x246);

    static Scenario Open(MappedImage image, ControlsInput input, ulong? cr3 = null)
    {
        var (controls, root, _) = input.WithDumpRegisters(cr3, image);
        return Scenario.FromImage(controls.Build(), root, image, access: null);
    }

    [Fact]
    public void An_ELF64_core_maps_gpas_through_its_segments_and_its_QEMU_note_gives_the_registers()
    {
        WriteCore(File("core64"), is64: true, ElfCoreInfo.EmX86_64, Long4Segments(), [Linux64, Linux64 with { Cr3 = 0x200000 }]);
        using var image = MappedImage.Open(File("core64"));

        var core = Assert.IsType<ElfCoreInfo>(image.Core);
        Assert.Equal([new ImageSegment(0, core.Segments[0].FileOffset, 0xa0000), new ImageSegment(0x100000, core.Segments[1].FileOffset, 0x100000)], core.Segments);
        Assert.NotEqual(0x100000UL, core.Segments[1].FileOffset);
        Assert.Equal([new QemuCpuState(0, 0x80050033, 0x100000, 0x3406f0, 0x246), new QemuCpuState(1, 0x80050033, 0x200000, 0x3406f0, 0x246)], core.Cpus);
        Assert.Equal(0x200000UL, image.Length);
        Assert.Equal(0x101003UL, image.ReadQword(0x100000));

        var (input, cr3, source) = new ControlsInput { Efer = 0xd01, Names = n => "--" + n }.WithDumpRegisters(null, image);
        Assert.Equal(0x100000UL, cr3);
        Assert.Equal("from the ELF core's QEMU note for vCPU 0 of 2: CR3=0x100000 CR0=0x80050033 CR4=0x3406f0 RFLAGS=0x246; EFER=0xd01 from --efer", source);
        var s = Scenario.FromImage(input.Build(), cr3, image, access: null).WithAccess(Access.Read(0x400123));
        Assert.Equal(PagingMode.Long4, s.Mode);
        var r = SpecWalk.Run(s);
        Assert.Equal(new WalkResult.Translated(0x5123, PageSize.Size4K, new TranslationRights(false, true, true, 0)), r.Result);

        // The dump's memory has holes: the PT at 0xb0000 is in none of the segments.
        var hole = Assert.Throws<InputException>(() => SpecWalk.Run(s.WithAccess(Access.Read(0x600000))));
        Assert.Equal($"the ELF core '{File("core64")}' holds no memory at gpa 0xb0000, where the walk needs the PTE (its segments end at gpa 0x200000)", hole.Message);
        var memory = s.BuildMemory();
        var (mappings, stats) = AddressSpaceMap.List(s.Boot(memory), memory);
        Assert.Equal(0x400000UL, Assert.Single(mappings).Virtual);
        Assert.Equal(1, stats.TablesOutsideMemory);
    }

    [Fact]
    public void A_segment_whose_gpa_and_file_offset_disagree_mod_8_is_refused_by_the_impl_view()
    {
        // File offsets are page-aligned here; a gpa of 0x1004 puts every 8-byte entry on a 4-byte host address,
        // which the impl's memslots must never see (GuestPhysicalMemory asserts 8-byte alignment).
        WriteCore(File("odd"), is64: true, ElfCoreInfo.EmX86_64, [(0x1004UL, new byte[0x3000])], [Linux64]);
        using var image = MappedImage.Open(File("odd"));
        var e = Assert.Throws<InputException>(() => MmuSpec.Cli.CopyOnWriteImage.Open(image));
        Assert.Contains("the segment at gpa 0x1004 is at file offset", e.Message);
        Assert.Contains("not 8-byte aligned with its gpa", e.Message);
    }

    [Fact]
    public void The_impl_walks_an_ELF_core_in_place_and_reports_its_AD_writes_at_gpas()
    {
        WriteCore(File("impl"), is64: true, ElfCoreInfo.EmX86_64, Long4Segments(), [Linux64]);
        using var image = MappedImage.Open(File("impl"));
        var s = Open(image, new ControlsInput { Efer = 0xd01 }).WithAccess(new Access(0x400008, AccessType.Write, Privilege.Supervisor));
        var spec = SpecWalk.Run(s);
        using var cow = MmuSpec.Cli.CopyOnWriteImage.Open(image);
        var impl = ImplWalk.Run(s, cow.Memory);
        Assert.Equal(new WalkResult.Translated(0x5008, PageSize.Size4K, new TranslationRights(false, true, true, 0)), impl.Result);
        Assert.Equal(spec.Result, impl.Result);
        // A in every entry, D in the PTE: found at their gpas, although the file holds them elsewhere.
        Assert.Equal([new EntryUpdate(0x100000, 0x101003, 0x101023), new EntryUpdate(0x101000, 0x102003, 0x102023),
                      new EntryUpdate(0x102010, 0x103003, 0x103023), new EntryUpdate(0x103000, 0x8000000000005003, 0x8000000000005063)],
            impl.Changes.OrderBy(c => c.Gpa));
        Assert.Equal(spec.Changes.OrderBy(c => c.Gpa), impl.Changes.OrderBy(c => c.Gpa));
        Assert.Equal(0x101003UL, image.ReadQword(0x100000));   // the file is untouched
    }

    [Fact]
    public void Registers_given_on_the_command_line_win_over_the_note_and_EFER_must_be_given()
    {
        WriteCore(File("core"), is64: true, ElfCoreInfo.EmX86_64, Long4Segments(), [Linux64 with { Cr3 = 0x7000 }]);
        using var image = MappedImage.Open(File("core"));
        var names = new ControlsInput { Names = n => "--" + n };

        Assert.Equal("the ELF core's QEMU note holds CR0, CR3, CR4 and RFLAGS but not EFER, which decides long mode and NXE with CR4.PAE set: give --efer (QEMU's info registers prints EFER=...)",
            Assert.Throws<InputException>(() => names.WithDumpRegisters(0x100000, image)).Message);

        var (input, cr3, source) = (names with { Efer = 0xd01 }).WithDumpRegisters(0x100000, image);
        Assert.Equal(0x100000UL, cr3);
        Assert.Equal("from the ELF core's QEMU note for vCPU 0: CR0=0x80050033 CR4=0x3406f0 RFLAGS=0x246; EFER=0xd01 from --efer", source);

        // A mode on the command line: only CR3 comes from the dump.
        var (mode, noteCr3, modeSource) = (names with { Mode = "long4", Nxe = true }).WithDumpRegisters(null, image);
        Assert.Equal((0x7000UL, "from the ELF core's QEMU note for vCPU 0: CR3=0x7000"), (noteCr3, modeSource));
        Assert.Null(mode.Cr0);
        // Everything given: nothing taken, nothing said.
        Assert.Null((names with { Cr0 = 0x80050033, Cr4 = 0x3406f0, Efer = 0xd01 }).WithDumpRegisters(0x100000, image).Source);
        Assert.Equal("--cpu 1: the ELF core has QEMU notes for 1 vCPU (0..0)",
            Assert.Throws<InputException>(() => (names with { Efer = 0xd01 }).WithDumpRegisters(null, image, cpu: 1)).Message);
    }

    [Fact]
    public void An_ELF32_core_of_a_PAE_guest_taken_under_QEMU_TCG_walks_with_the_QEMU_PDPTE_option()
    {
        // QEMU writes ELF32 for a vCPU outside long mode with memory below 4 GiB. PAE: PDPT at 0x2020
        // with A set by TCG in PDPTE 0, PD 0x3000, PT 0x4000, page 0x5000.
        var ram = new byte[0x10000];
        Put64(ram, 0x2020, 0x3021);
        Put64(ram, 0x3000, 0x4067);
        Put64(ram, 0x4000, 0x5067);
        WriteCore(File("core32"), is64: false, ElfCoreInfo.EmI386, [(0, ram)], [new Cpu(0x80000011, 0x2020, 0x20, 0x2)]);
        using var image = MappedImage.Open(File("core32"));
        Assert.False(image.Core!.Is64);

        var s = Open(image, new ControlsInput { Efer = 0 }).WithAccess(Access.Read(0x123));
        Assert.Equal(PagingMode.Pae, s.Mode);
        Assert.Contains("--pdpte-as-qemu ignores bits 8:5 as QEMU does", Assert.Throws<InputException>(() => SpecWalk.Run(s)).Message, StringComparison.Ordinal);
        Assert.Equal(0x5123UL, Assert.IsType<WalkResult.Translated>(SpecWalk.Run(s.WithQemuPdptes()).Result).Gpa);
    }

    [Fact]
    public void A_core_without_a_QEMU_note_needs_cr3_and_a_raw_image_holds_no_registers()
    {
        WriteCore(File("bare"), is64: true, ElfCoreInfo.EmX86_64, Long4Segments(), []);
        using (var image = MappedImage.Open(File("bare")))
        {
            Assert.Empty(image.Core!.Cpus);
            Assert.Equal($"--cr3 is required: the ELF core '{File("bare")}' has no QEMU note with the registers",
                Assert.Throws<InputException>(() => new ControlsInput { Mode = "long4", Names = n => "--" + n }.WithDumpRegisters(null, image)).Message);
            var s = Open(image, new ControlsInput { Mode = "long4", Nxe = true }, cr3: 0x100000).WithAccess(Access.Read(0x400000));
            Assert.IsType<WalkResult.Translated>(SpecWalk.Run(s).Result);
        }

        System.IO.File.WriteAllBytes(File("raw"), new byte[8192]);
        using var raw = MappedImage.Open(File("raw"));
        Assert.Null(raw.Core);
        Assert.Equal("--cr3 is required with a raw image (it holds no registers)",
            Assert.Throws<InputException>(() => new ControlsInput { Mode = "long4", Names = n => "--" + n }.WithDumpRegisters(null, raw)).Message);
    }

    [Theory]
    [InlineData(new byte[] { 0x1f, 0x8b, 8, 0 }, "is gzip-compressed, not raw guest memory or an ELF core")]
    [InlineData(new byte[] { 0x28, 0xb5, 0x2f, 0xfd }, "is zstd-compressed, not raw guest memory or an ELF core")]
    [InlineData(new byte[] { (byte)'K', (byte)'D', (byte)'U', (byte)'M', (byte)'P', 32, 32, 32 }, "is a kdump-compressed dump (dump-guest-memory -z/-l/-s), not raw guest memory or an ELF core")]
    [InlineData(new byte[] { (byte)'P', (byte)'A', (byte)'G', (byte)'E', (byte)'D', (byte)'U', (byte)'6', (byte)'4' }, "is a Windows crash dump (dump-guest-memory -w), not raw guest memory or an ELF core")]
    [InlineData(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F', 2, 2, 1 }, "is an ELF file but big-endian: x86 dumps are little-endian")]
    public void Files_whose_header_shows_another_format_are_refused(byte[] header, string expected)
    {
        var bytes = new byte[8192];
        header.CopyTo(bytes, 0);
        System.IO.File.WriteAllBytes(File("other"), bytes);
        var e = Assert.Throws<InputException>(() => MappedImage.Open(File("other")));
        Assert.StartsWith($"image '{File("other")}' {expected}", e.Message);
    }

    [Fact]
    public void An_ELF_that_is_not_a_core_or_is_truncated_is_refused()
    {
        WriteCore(File("exec"), is64: true, ElfCoreInfo.EmX86_64, Long4Segments(), [], type: 2);
        Assert.Equal($"image '{File("exec")}' is an ELF file but not a core dump (e_type 2, an executable such as vmlinux): give a memory dump (QEMU dump-guest-memory or pmemsave)",
            Assert.Throws<InputException>(() => MappedImage.Open(File("exec"))).Message);

        WriteCore(File("arm"), is64: true, 183, Long4Segments(), []);
        Assert.Equal($"image '{File("arm")}' is an ELF file but a core of machine 183, not x86 (3 or 62)", Assert.Throws<InputException>(() => MappedImage.Open(File("arm"))).Message);

        WriteCore(File("cut"), is64: true, ElfCoreInfo.EmX86_64, Long4Segments(), [Linux64]);
        var whole = System.IO.File.ReadAllBytes(File("cut"));
        System.IO.File.WriteAllBytes(File("cut"), whole[..(whole.Length - 0x1000)]);
        Assert.StartsWith($"image '{File("cut")}': ELF core truncated: program header 1 needs bytes [",
            Assert.Throws<InputException>(() => MappedImage.Open(File("cut"))).Message);
    }
}
