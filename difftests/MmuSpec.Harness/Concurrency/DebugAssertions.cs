using System.Diagnostics;

namespace MmuSpec.Harness.Concurrency;

/// <summary>A failed <see cref="Debug.Assert(bool)"/> in a DEBUG build of impl/, as an exception the harness reports.</summary>
public sealed class DebugAssertionException(string message) : Exception(message);

/// <summary>
/// Makes a failed Debug.Assert throw <see cref="DebugAssertionException"/> instead of ending the process: by
/// default .NET's trace listener fails fast, so a DEBUG check in impl/ (ConcurrentTdpMmu.FreeCheck.cs) killed the
/// `mmuspec check` it ran in, with no history and no counterexample. Thrown on the vCPU thread that failed it, the
/// exception ends that thread's op, and the exploration reports the history with it ("thread T threw ..."), shrinks
/// and saves it like any other failure. Installed once per process, before the first concurrent case; a throwing
/// listener already first (the tests' own) is left in place.
/// </summary>
public static class DebugAssertions
{
    static readonly object Gate = new();
    static bool installed;

    public static void ThrowOnFailure()
    {
        lock (Gate)
        {
            if (installed) return;
            installed = true;
            if (Trace.Listeners.Count > 0 && Trace.Listeners[0] is not DefaultTraceListener) return;
            Trace.Listeners.Insert(0, new Throwing());
        }
    }

    sealed class Throwing : TraceListener
    {
        public override void Fail(string? message, string? detailMessage) =>
            throw new DebugAssertionException($"assertion failed: {message}{(string.IsNullOrEmpty(detailMessage) ? "" : " " + detailMessage)}");

        public override void Fail(string? message) => Fail(message, null);

        public override void Write(string? message) { }

        public override void WriteLine(string? message) { }
    }
}
