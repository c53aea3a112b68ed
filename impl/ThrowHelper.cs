using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl;

/// <summary>
/// Cold throw sites. Keeping every <c>throw</c> in a non-inlined method keeps the hot callers
/// small enough to inline and free of exception-construction code.
/// </summary>
internal static class ThrowHelper
{
    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void ArgumentOutOfRange(string paramName, string message) =>
        throw new ArgumentOutOfRangeException(paramName, message);

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void Argument(string paramName, string message) =>
        throw new ArgumentException(message, paramName);

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void ArgumentNull(string paramName) =>
        throw new ArgumentNullException(paramName);

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    public static void InvalidOperation(string message) =>
        throw new InvalidOperationException(message);
}
