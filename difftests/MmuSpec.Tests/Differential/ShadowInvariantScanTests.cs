using System.Reflection;
using System.Runtime.ExceptionServices;
using MmuSpec.Harness.Shadow;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Shadow;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The impl invariant check keeps its maps between steps: a scan must still name a misreported
/// structure, and the next scan of a consistent VM must find nothing left over from it.
/// </summary>
public sealed class ShadowInvariantScanTests
{
    /// <summary>The impl's VM as it is, except that, when asked, its reverse map omits the first entry it lists.</summary>
    public class MisreportingVm : DispatchProxy
    {
        public IShadowVm Inner = null!;
        public bool DropFirstRmapEntry;

        protected override object? Invoke(MethodInfo? method, object?[]? args)
        {
            if (DropFirstRmapEntry && method!.Name == nameof(IShadowVm.VisitReverseMap))
            {
                var visit = (Action<ulong, IReadOnlyList<ShadowEntryRef>>)args![0]!;
                bool dropped = false;
                Inner.VisitReverseMap((gfn, refs) =>
                {
                    if (!dropped && refs.Count > 0) { dropped = true; visit(gfn, refs.Skip(1).ToList()); }
                    else visit(gfn, refs);
                });
                return null;
            }
            try { return method!.Invoke(Inner, args); }
            catch (TargetInvocationException e) { ExceptionDispatchInfo.Throw(e.InnerException!); throw; }
        }
    }

    [Fact]
    public void A_reverse_map_missing_an_entry_is_named_and_the_next_consistent_scan_reports_nothing()
    {
        int named = 0;
        for (int seed = 0; seed < 30; seed++)
        {
            var c = ShadowGen.Build(seed, 40, new ShadowGenOptions(seed % 2 == 0 ? PagingMode.Long4 : PagingMode.Pae));
            MisreportingVm? proxy = null;
            using var impl = new ImplShadowEngine(c.Config, new NativePagePool(), vm =>
            {
                var p = DispatchProxy.Create<IShadowVm, MisreportingVm>();
                proxy = (MisreportingVm)(object)p;
                proxy.Inner = vm;
                return p;
            });
            foreach (var op in c.Setup.Concat(c.Ops))
            {
                impl.Step(op);
                Assert.Empty(impl.InvariantProblems());
                (ulong Gfn, ShadowEntryRef Ref)? first = null;
                impl.Vm.VisitReverseMap((gfn, refs) => { if (first is null && refs.Count > 0) first = (gfn, refs[0]); });
                if (first is not { } f) continue;
                proxy!.DropFirstRmapEntry = true;
                var problems = impl.InvariantProblems();
                proxy.DropFirstRmapEntry = false;
                Assert.Equal([$"rmap of gfn 0x{f.Gfn:X}: missing {f.Ref.Page}[{f.Ref.Index}], extra none"], problems.ToArray());
                named++;
            }
        }
        Assert.True(named > 100, $"{named} scans with an entry missing");
    }
}
