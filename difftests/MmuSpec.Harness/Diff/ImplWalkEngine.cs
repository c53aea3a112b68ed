using System.Collections.Immutable;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using ImplMemory = MmuSpec.Impl.Memory;
using ImplPaging = MmuSpec.Impl.Paging;
using static MmuSpec.Harness.Diff.PagingVocabulary;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The impl's guest walk as an engine: it feeds spec operations to the impl and reads the impl's
/// results and state back into spec terms (the words themselves: <see cref="PagingVocabulary"/>).
/// It owns the native page pool, so disposing it frees (and lets tests count) every page.
/// </summary>
public sealed class ImplWalkEngine : IWalkEngine
{
    readonly ImplMemory.NativePagePool pool;
    readonly ImplMemory.GuestPhysicalMemory memory;
    readonly ImplPaging.GuestVcpu vcpu;

    ImplWalkEngine(ImplMemory.NativePagePool pool, ImplMemory.GuestPhysicalMemory memory, ImplPaging.GuestVcpu vcpu)
    {
        this.pool = pool; this.memory = memory; this.vcpu = vcpu;
    }

    public string Name => "impl";
    public ImplMemory.NativePagePool Pool => pool;

    /// <summary>The impl booted like <see cref="WalkCase.BootSpec"/>, or null when boot raises #GP.</summary>
    public static ImplWalkEngine? Boot(WalkCase c, ImplMemory.NativePagePool? sharedPool = null)
    {
        var pool = sharedPool ?? new ImplMemory.NativePagePool();
        var memory = new ImplMemory.GuestPhysicalMemory(pool);
        try
        {
            foreach (var s in c.Slots) memory.AddSlot(s.BaseGfn, s.Pages);
            foreach (var w in c.Setup) Write(memory, w);
            ImplPaging.GuestVcpu vcpu;
            // The impl's constructor rejects a boot state whose MOV CR3 would raise #GP.
            try { vcpu = new ImplPaging.GuestVcpu(memory, ToImpl(c.Controls), c.Cr3); }
            catch (ArgumentException) { memory.Dispose(); return null; }
            return new ImplWalkEngine(pool, memory, vcpu);
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }

    public OpResult Step(Op op) => op switch
    {
        Op.GuestAccess a => new OpResult.Walked(FromImpl(vcpu.Access(a.Access.Gva, ToImpl(a.Access.Type), ToImpl(a.Access.Privilege)))),
        Op.WriteGuest w => Write(memory, w),
        Op.LoadCr3 l => vcpu.LoadCr3(l.Cr3) ? OpResult.Completed.Instance : Gp,
        Op.SetControls s => vcpu.SetControls(ToImpl(s.Controls)) ? OpResult.Completed.Instance : Gp,
        _ => throw new ArgumentException($"unknown operation {op}", nameof(op)),
    };

    // The impl reports #GP without a reason; the comparison ignores the reason (see WalkDiff.Describe).
    static readonly OpResult Gp = new OpResult.GeneralProtection(GpReason.Cr3ReservedBits);

    static OpResult Write(ImplMemory.GuestPhysicalMemory memory, Op.WriteGuest w)
    {
        _ = w.Size == 8 ? memory.TryWrite64(w.Gpa, w.Value) : memory.TryWrite32(w.Gpa, (uint)w.Value);
        return OpResult.Completed.Instance;
    }

    public MachineView View() => new(Cpu(), ImmutableSortedDictionary.CreateRange(Words()));

    /// <summary>The vCPU's paging state in spec terms.</summary>
    public CpuState Cpu()
    {
        var c = FromImpl(vcpu.Controls);
        var pdptes = c.Mode == PagingMode.Pae ? Enumerable.Range(0, 4).Select(vcpu.Pdpte).ToArray() : new ulong[4];
        return new CpuState(c, vcpu.Cr3, pdptes);
    }

    /// <summary>Every non-zero 8-byte word of guest memory, ascending by gpa (slots never overlap).</summary>
    public List<KeyValuePair<ulong, ulong>> Words()
    {
        var words = new List<KeyValuePair<ulong, ulong>>();
        foreach (int i in SlotsByGpa())
        {
            ulong baseGpa = memory.Slots[i].BaseGfn << 12;
            var qwords = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(memory.SlotBytes(i));
            // IndexOfAnyExcept is vectorized (and optimized even in a Debug build of this harness):
            // guest memory is mostly zero, so this skips it 32 bytes at a time.
            for (int q = qwords.IndexOfAnyExcept(0UL); q >= 0;)
            {
                words.Add(new(baseGpa + (ulong)q * 8, qwords[q]));
                int next = qwords[(q + 1)..].IndexOfAnyExcept(0UL);
                q = next < 0 ? -1 : q + 1 + next;
            }
        }
        return words;
    }

    /// <summary>
    /// Whether guest memory's non-zero words are exactly <paramref name="words"/> (same gpas, same
    /// values): the state comparison's common case in one pass, without building the impl's list.
    /// </summary>
    public bool HoldsExactly(ImmutableSortedDictionary<ulong, ulong> words)
    {
        // A mutable struct enumerator: not a using variable, which would be read-only and advance a copy.
        var expected = words.GetEnumerator();
        try
        {
            foreach (int i in SlotsByGpa())
            {
                ulong baseGpa = memory.Slots[i].BaseGfn << 12;
                var qwords = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(memory.SlotBytes(i));
                for (int q = qwords.IndexOfAnyExcept(0UL); q >= 0;)
                {
                    if (!expected.MoveNext() || expected.Current.Key != baseGpa + (ulong)q * 8 || expected.Current.Value != qwords[q]) return false;
                    int next = qwords[(q + 1)..].IndexOfAnyExcept(0UL);
                    q = next < 0 ? -1 : q + 1 + next;
                }
            }
            return !expected.MoveNext();
        }
        finally { expected.Dispose(); }
    }

    /// <summary>The impl's memslots, in its own order: the index is <see cref="SlotWords"/>'s.</summary>
    public IReadOnlyList<ImplMemory.MemslotInfo> Slots => memory.Slots;

    /// <summary>Slot <paramref name="index"/>'s bytes as 8-byte words, read in place.</summary>
    public ReadOnlySpan<ulong> SlotWords(int index) =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(memory.SlotBytes(index));

    /// <summary>From now on guest memory logs the frames written (<see cref="TakeWrittenFrames"/>).</summary>
    public void TrackWrites() => memory.TrackWrites();

    /// <summary>Moves the frames the impl wrote since the last call into <paramref name="gfns"/>.</summary>
    public void TakeWrittenFrames(ICollection<ulong> gfns) => memory.TakeWrittenFrames(gfns);

    IEnumerable<int> SlotsByGpa() => Enumerable.Range(0, memory.Slots.Count).OrderBy(i => memory.Slots[i].BaseGfn);

    public void Dispose() => memory.Dispose();
}
