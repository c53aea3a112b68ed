using BenchmarkDotNet.Attributes;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Bench;

/// <summary>
/// The base of every benchmark class that times the impl against the spec as its baseline: Ratio as "Nx faster"
/// (<see cref="RatioAsTrendConfig"/>), allocations (the impl's must be 0 B) and the median beside the mean, which a noisy
/// machine moves less. BenchmarkDotNet reads these attributes from the base class; categories and grouping differ, so
/// each class states its own.
/// </summary>
[Config(typeof(RatioAsTrendConfig))]
[MemoryDiagnoser]
[MedianColumn]
public abstract class ImplVsSpecBenchmark;

/// <summary>The leak check a benchmark's cleanup (or a rig's Dispose) ends with: a native page still in use after the VM was disposed is a leak the timings would not show.</summary>
public static class NativePageLeaks
{
    /// <summary>Throws if <paramref name="pool"/> still has pages in use (<paramref name="when"/> says at which point).</summary>
    public static void Check(NativePagePool pool, string when = "after cleanup")
    {
        if (pool.PagesInUse != 0)
            throw new InvalidOperationException($"native page leak: {pool.PagesInUse} pages still in use {when}");
    }

    /// <summary>Disposes <paramref name="pool"/> (after the VMs on it) and checks that every page came back.</summary>
    public static void DisposePool(NativePagePool pool)
    {
        pool.Dispose();
        Check(pool);
    }
}
