using System.Collections.Immutable;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using ImplMemory = MmuSpec.Impl.Memory;
using ImplPaging = MmuSpec.Impl.Paging;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The impl as an engine. This adapter is the only place that knows both vocabularies: it feeds
/// spec operations to the impl and reads the impl's results and state back into spec terms.
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

    public MachineView View()
    {
        var c = FromImpl(vcpu.Controls);
        var pdptes = c.Mode == PagingMode.Pae ? Enumerable.Range(0, 4).Select(vcpu.Pdpte).ToArray() : new ulong[4];
        var words = ImmutableSortedDictionary.CreateBuilder<ulong, ulong>();
        for (int i = 0; i < memory.Slots.Count; i++)
        {
            ulong baseGpa = memory.Slots[i].BaseGfn << 12;
            var qwords = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(memory.SlotBytes(i));
            // IndexOfAnyExcept is vectorized (and optimized even in a Debug build of this harness):
            // guest memory is mostly zero, so this skips it 32 bytes at a time.
            for (int q = qwords.IndexOfAnyExcept(0UL); q >= 0;)
            {
                words[baseGpa + (ulong)q * 8] = qwords[q];
                int next = qwords[(q + 1)..].IndexOfAnyExcept(0UL);
                q = next < 0 ? -1 : q + 1 + next;
            }
        }
        return new MachineView(new CpuState(c, vcpu.Cr3, pdptes), words.ToImmutable());
    }

    public static ImplPaging.PagingControls ToImpl(PagingControls c) => new(
        ToImpl(c.Mode), c.Cr0Wp, c.Cr4Pse, c.Cr4Smep, c.Cr4Smap, c.Cr4Pke, c.EferNxe, c.EflagsAc, c.Pkru, c.MaxPhyAddr);

    public static PagingControls FromImpl(ImplPaging.PagingControls c) => new(
        FromImpl(c.Mode), c.Cr0Wp, c.Cr4Pse, c.Cr4Smep, c.Cr4Smap, c.Cr4Pke, c.EferNxe, c.EflagsAc, c.Pkru, c.MaxPhyAddr);

    // Explicit maps, not casts: the two sides' enums are independent declarations.
    public static ImplPaging.PagingMode ToImpl(PagingMode m) => m switch
    {
        PagingMode.Bits32 => ImplPaging.PagingMode.Bits32,
        PagingMode.Pae => ImplPaging.PagingMode.Pae,
        PagingMode.Long4 => ImplPaging.PagingMode.Long4,
        PagingMode.Long5 => ImplPaging.PagingMode.Long5,
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    public static PagingMode FromImpl(ImplPaging.PagingMode m) => m switch
    {
        ImplPaging.PagingMode.Bits32 => PagingMode.Bits32,
        ImplPaging.PagingMode.Pae => PagingMode.Pae,
        ImplPaging.PagingMode.Long4 => PagingMode.Long4,
        ImplPaging.PagingMode.Long5 => PagingMode.Long5,
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    public static ImplPaging.AccessType ToImpl(AccessType t) => t switch
    {
        AccessType.Read => ImplPaging.AccessType.Read,
        AccessType.Write => ImplPaging.AccessType.Write,
        AccessType.Fetch => ImplPaging.AccessType.Fetch,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static ImplPaging.Privilege ToImpl(Privilege p) => p switch
    {
        Privilege.Supervisor => ImplPaging.Privilege.Supervisor,
        Privilege.User => ImplPaging.Privilege.User,
        Privilege.ImplicitSupervisor => ImplPaging.Privilege.ImplicitSupervisor,
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    public static WalkResult FromImpl(ImplPaging.WalkOutcome o) => o.Status switch
    {
        ImplPaging.WalkStatus.Translated => new WalkResult.Translated(o.Gpa, PageSizes.FromShift(o.PageShift),
            new TranslationRights(o.User, o.Writable, o.NoExecute, o.ProtectionKey)),
        ImplPaging.WalkStatus.PageFault => new WalkResult.PageFault((PageFaultErrorCode)o.ErrorCode),
        ImplPaging.WalkStatus.GeneralProtection => new WalkResult.GeneralProtection(GpReason.NonCanonical),
        _ => throw new InvalidOperationException($"impl returned unknown walk status {o.Status}"),
    };

    public void Dispose() => memory.Dispose();
}
