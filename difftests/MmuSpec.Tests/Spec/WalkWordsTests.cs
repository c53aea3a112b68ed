using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;
using static MmuSpec.Spec.Paging.Privilege;
using static MmuSpec.Tests.Spec.PageTableBuilder;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// <see cref="PageWalk.Translate"/> and <see cref="PageWalk.Walk"/> are the walk of <see cref="PageWalk.Explain"/>
/// without its words (issue 19: the MMU models walked with the explanation formatted on every guest access).
/// Same steps, result, updates and memory; only the notes and the rule are left out, and so is their cost.
/// </summary>
public sealed class WalkWordsTests
{
    static readonly PagingControls L4 = new(PagingMode.Long4);

    /// <summary>Walks that end in each way a walk ends: translated (with A/D updates), not present, reserved bits, rights, #GP.</summary>
    public static TheoryData<string> Cases => ["translated read", "translated write", "pte not present", "reserved bit", "user write to supervisor", "non-canonical"];

    static (GuestMemory Memory, Access Access) Case(string name) => name switch
    {
        "translated read" => (Long4Tree(), Access.Read(Long4Gva)),
        "translated write" => (Long4Tree(), Access.Write(Long4Gva, User)),
        "pte not present" => (Long4Tree(pte: 0), Access.Read(Long4Gva)),
        "reserved bit" => (Long4Tree().Write64(0x4020, 0x12_3000 | PWU | 1UL << 51), Access.Read(Long4Gva)),
        "user write to supervisor" => (Long4Tree(pte: 0x3), Access.Write(Long4Gva, User)),
        "non-canonical" => (Long4Tree(), Access.Read(0x0000_8000_0000_0000)),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Walk_is_Explain_without_the_words(string name)
    {
        var (memory, access) = Case(name);
        var cpu = Boot(L4, memory).Cpu;
        var told = PageWalk.Explain(cpu, memory, access);
        var walked = PageWalk.Walk(cpu, memory, access);
        var translated = PageWalk.Translate(cpu, memory, access);

        Assert.NotEqual("", told.Rule);
        Assert.All(told.Steps, s => Assert.NotEqual("", s.Note));
        Assert.Equal("", walked.Rule);
        Assert.All(walked.Steps, s => Assert.Equal("", s.Note));
        Assert.Equal(told.Steps.Select(s => s with { Note = "" }), walked.Steps);
        Assert.Equal(told.Result, walked.Result);
        Assert.Equal(told.Updates.ToArray(), walked.Updates.ToArray());
        Assert.Equal(told.MemoryAfter.Written, walked.MemoryAfter.Written);
        Assert.Equal(told.Result, translated.Result);
        if (name == "translated write") Assert.NotEqual(memory.Written, walked.MemoryAfter.Written); // A and D were set
        Assert.Equal(told.MemoryAfter.Written, translated.Memory.Written);
    }

    // The point of the split: the words cost allocations (formatted hex, flags, rights) on every walk.
    [Theory]
    [MemberData(nameof(Cases))]
    public void Translate_allocates_less_than_Explain(string name)
    {
        var (memory, access) = Case(name);
        var cpu = Boot(L4, memory).Cpu;
        long explain = Allocated(() => PageWalk.Explain(cpu, memory, access));
        long translate = Allocated(() => PageWalk.Translate(cpu, memory, access));
        Assert.True(translate < explain, $"Translate allocated {translate} B, Explain {explain} B");
    }

    static long Allocated(Action walk)
    {
        walk(); // JIT and first-use allocations out of the way
        long before = GC.GetAllocatedBytesForCurrentThread();
        walk();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }
}
