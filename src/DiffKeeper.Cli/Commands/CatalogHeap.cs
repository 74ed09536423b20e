using DiffKeeper.Native;

namespace DiffKeeper.Cli.Commands;

/// <summary>
/// The malloc heap to populate before a catalog is read (<see cref="HeapPrefault"/>): SQLite's page cache takes a
/// fresh heap page for every catalog page it reads, and an export or a materialization reads most of its catalog
/// (a W4 materialization ~170 pages of 700 KB, a W3 export ~180), one page fault each (a hypervisor trap on this
/// project's VMs, ~35 µs) against ~1.5 µs a page populated at once.
/// </summary>
internal static class CatalogHeap
{
    /// <summary>
    /// Populates the catalog's size, at most SQLite's default cache (2 MiB), a quarter MiB for the rest of the heap's
    /// growth, and <paramref name="extra"/> bytes the command allocates besides, until the scope ends.
    /// </summary>
    public static HeapPrefault.Scope Reserve(string trace, long extra = 0)
    {
        long size;
        try
        {
            size = new FileInfo(Path.Combine(trace, "catalog.db")).Length;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            size = 0; // TraceReader.Open says what is wrong
        }

        return HeapPrefault.Reserve((nuint)(Math.Min(size, 2L << 20) + (256 << 10) + extra));
    }
}
