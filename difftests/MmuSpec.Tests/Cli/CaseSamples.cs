using System.Collections.Immutable;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Tests.Cli;

/// <summary>Cases for the serialization and replay tests: drawn from a property's own generator, and hand-made ones with every op kind.</summary>
internal static class CaseSamples
{
    /// <summary>
    /// <paramref name="count"/> cases exactly as the property's FsCheck run draws them (sizes ramping
    /// up), from a fixed start so every test run sees the same ones.
    /// </summary>
    public static List<object> Draw(DiffProperty p, int count, ulong seed = 2024)
    {
        var cases = new List<object>();
        var runner = PropertyCheck.Check(p.Name, p, _ => { }, count, PropertyCheck.SeededStart(seed, p.Name), throwOnFailure: false,
            holds: c => { cases.Add(c); return true; });
        if (runner.FailureReport is { } report) throw new InvalidOperationException(report);
        return cases;
    }

    /// <summary>
    /// A walk case with every walk op kind and unusual values (PAE, PKRU, a 4-byte write of all ones, a
    /// 64-bit CR3 and a kernel address once in 5-level paging), within <see cref="CaseRules"/>.
    /// </summary>
    public static WalkCase EveryWalkOp() => new(
        WalkGen.Slots,
        new PagingControls(PagingMode.Pae, cr0Wp: true, cr4Smap: true, eferNxe: true, eflagsAc: true, pkru: 0x5555_5554, maxPhyAddr: 52),
        0x1020,
        [new Op.WriteGuest(0x1020, 0x2001, 8), new Op.WriteGuest(0x2ff8, 0x8000_0000_0000_3063, 8)],
        [
            new Op.GuestAccess(new Access(0x8000_0123, AccessType.Fetch, Privilege.User)),
            new Op.WriteGuest(0x2004, uint.MaxValue, 4),
            new Op.SetControls(new PagingControls(PagingMode.Long5, cr4Pke: true, cr4Smep: true, cr4Pse: true, maxPhyAddr: 36)),
            new Op.LoadCr3(0x8000_0000_0000_1000),
            new Op.GuestAccess(Access.Write(0xff00_0000_0000_1234, Privilege.ImplicitSupervisor)),
        ]);

    /// <summary>A TDP case with every TDP op kind, on a stage-2 VM with shared bit 47.</summary>
    public static TdpCase EveryTdpOp() => new(new VmConfig(TdpFormat.Stage2, 47),
    [
        new TdpOp.CreateSlot(3, 0x100, 0x200, 0xabc00, PageSize.Size2M, ReadOnly: true),
        new TdpOp.CreateSlot(4, 0x40000, 0x40000, 0x1_0000_0000, PageSize.Size1G, ReadOnly: false),
        new TdpOp.DeleteSlot(-1),
        new TdpOp.MoveSlot(3, 0x400),
        new TdpOp.SetDirtyLogging(3, true),
        new TdpOp.GetDirtyLog(3),
        new TdpOp.AccessGpa(0x8000_0040_0123, AccessType.Fetch),
        new TdpOp.ZapRange(0, 1UL << 36),
        new TdpOp.ZapAll(),
        new TdpOp.SetMaxPageSize(PageSize.Size4K),
        new TdpOp.GuestStore(0x1003, 0xdead, 2),
        new TdpOp.GuestSetPaging(new PagingControls(PagingMode.Bits32, cr4Pse: true), 0x3000),
        new TdpOp.GuestAccess(Access.Read(0x40_0000, Privilege.User)),
        new TdpOp.GuestSetPaging(null, 0),
        new TdpOp.PreFault(0x40_0000, 0x20_1000),
        new TdpOp.Age(0x100, 0x300),
        new TdpOp.TestAge(0x40000, 0x80000),
    ]);

    /// <summary>A shadow case with every shadow op kind, on a 40-bit VM without unsync pages and with KVM's root policy.</summary>
    public static ShadowCase EveryShadowOp() => new(new ShadowConfig(40, allowUnsync: false, ShadowRootPolicy.Upstream),
    [
        new ShadowOp.CreateSlot(0, 0, 0x100, 0x5000, ReadOnly: false),
        new ShadowOp.GuestStore(0x1000, 0x2003, 8),
        new ShadowOp.GuestStore(0x2000, 0x83, 8),
        new ShadowOp.GuestSetPaging(new PagingControls(PagingMode.Long4, cr0Wp: true, maxPhyAddr: 40), 0x1001, Pcide: true),
    ],
    [
        new ShadowOp.GuestAccess(Access.Write(0x123, Privilege.User)),
        new ShadowOp.GuestMovCr3(0x1002 | ShadowOp.GuestMovCr3.NoFlush),
        new ShadowOp.Invpcid(ShadowOp.Invpcid.IndividualAddress, 1, 0x4000),
        new ShadowOp.Invpcid(ShadowOp.Invpcid.SingleContext, 2, 0),
        new ShadowOp.Invpcid(ShadowOp.Invpcid.AllContexts, 0, 0),
        new ShadowOp.Invpcid(ShadowOp.Invpcid.AllNonGlobal, 0, 0),
        new ShadowOp.Invpcid(9, 0xfff_ffff, ulong.MaxValue),
        new ShadowOp.Invlpg(0x123),
        new ShadowOp.FlushTlb(),
        new ShadowOp.SetDirtyLogging(0, true),
        new ShadowOp.GuestStore(0x3000, 0x1, 4),
        new ShadowOp.GetDirtyLog(0),
        new ShadowOp.MoveSlot(0, 0x1000),
        new ShadowOp.ZapRange(0x1000, 0x1010),
        new ShadowOp.ZapAll(),
        new ShadowOp.DeleteSlot(0),
        new ShadowOp.CreateSlot(7, 0x200, 1, 0xff_ffff_ffff, ReadOnly: true),
    ]);

    /// <summary>The concrete op types of an op family (the nested records deriving from <typeparamref name="TOp"/>).</summary>
    public static ImmutableHashSet<Type> OpKinds<TOp>() =>
        [.. typeof(TOp).GetNestedTypes().Where(t => t.IsSubclassOf(typeof(TOp)) && !t.IsAbstract)];

    /// <summary>The op types a case uses.</summary>
    public static IEnumerable<Type> OpTypes(object c) => c switch
    {
        WalkCase w => w.Setup.Cast<Op>().Concat(w.Ops).Select(o => o.GetType()),
        TdpCase t => t.Ops.Select(o => o.GetType()),
        ShadowCase s => s.AllOps.Select(o => o.GetType()),
        Harness.Concurrency.ConcurrentTdpCase k => k.Setup.Concat(k.Program.Threads.SelectMany(t => t)).Select(o => o.GetType()),
        Harness.Nested.NestedEptCase n => n.AllOps.Select(o => o.GetType()),
        _ => throw new ArgumentException(c.GetType().Name),
    };
}
