using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Remote;

/// <summary>
/// Which sessions `forget` deletes: those numbered (positions in start order, from 1), or those neither retention
/// rule keeps (<see cref="KeepLast"/>: the newest N; <see cref="KeepWithin"/>: started within that long before now).
/// Nothing selected: only the garbage is collected.
/// </summary>
public sealed record ForgetSelection(IReadOnlyCollection<long> Numbers, int? KeepLast, TimeSpan? KeepWithin)
{
    public static readonly ForgetSelection None = new([], null, null);

    public bool ByRule => KeepLast is not null || KeepWithin is not null;
}

/// <summary>What a `forget` deleted (or, in a dry run, would delete).</summary>
public sealed record ForgetResult(
    IReadOnlyList<(long Number, SessionManifest Manifest)> Forgotten,
    int SessionsLeft,
    int LiveSessionsKept,
    int GenerationsDeleted,
    int PacksDeleted,
    long PackBytesDeleted,
    int IndexesDeleted,
    int SegmentsDeleted,
    long SegmentBytesDeleted,
    int ObjectsKept,
    long BytesKept);

/// <summary>
/// Deletes sessions from a remote store and then the objects no manifest names (docs/store-format.md, "Remote
/// stores": deleting). Safe beside writers without a lock: an object no manifest names is deleted only when it is
/// older than the grace period by its <c>LastModified</c> and no session forgotten within the grace named it (its
/// <c>forgotten/</c> marker), since a writer may be about to name it; and a writer re-lists <c>index/</c> before its
/// manifest when its own listing is older than half the grace (<see cref="SessionUploader"/>).
/// Every step is idempotent: a `forget` killed at any moment leaves a store that reads, and the next one finishes.
/// </summary>
public sealed class RemoteForget
{
    private readonly IObjectStore _store;
    private readonly RemoteTrace _trace;
    private readonly TimeProvider _time;

    public RemoteForget(IObjectStore store, string cacheRoot, TimeProvider time)
    {
        _store = store;
        _trace = new RemoteTrace(store, cacheRoot);
        _time = time;
    }

    /// <summary>
    /// Deletes the sessions <paramref name="selection"/> names (a marker first, then every manifest generation, the
    /// newest last, so a session never shows an older state), the older generations of the sessions kept, then every
    /// pack, index and segment that no manifest names, that is older than <paramref name="grace"/> and that no marker
    /// younger than it names; an index before its pack, so a writer that sees an index finds its pack; then the
    /// markers older than the grace. With <paramref name="dryRun"/>, deletes nothing and says what it
    /// would. <paramref name="progress"/> gets (objects done, objects to delete) while it deletes.
    /// </summary>
    public async Task<ForgetResult> RunAsync(ForgetSelection selection, TimeSpan grace, bool dryRun, Action<long, long>? progress, CancellationToken cancel)
    {
        if (dryRun)
        {
            return await RunAsync(selection, grace, null, progress, cancel).ConfigureAwait(false);
        }

        // The run's marker before anything it lists or deletes (docs/store-format.md, "Deleting", step 0).
        await using var lease = await ForgetRunLease.StartAsync(_store, _time, cancel).ConfigureAwait(false);
        var result = await RunAsync(selection, grace, lease, progress, cancel).ConfigureAwait(false);
        await lease.EndAsync(cancel).ConfigureAwait(false);
        return result;
    }

    private async Task<ForgetResult> RunAsync(ForgetSelection selection, TimeSpan grace, ForgetRunLease? lease, Action<long, long>? progress, CancellationToken cancel)
    {
        var dryRun = lease is null;
        var sessions = await _trace.ListAsync(cancel).ConfigureAwait(false);
        var readable = sessions.Where(s => s.Manifest is not null).ToList();
        var now = _time.GetUtcNow();
        var forget = Select(readable, selection, grace, now, out var live);

        // Manifests: a forgotten session's generations, the newest last; a kept session's generations older than its
        // newest readable one, once that one is older than the grace (until then, what only they name stays named).
        var doomedManifests = new List<List<string>>();
        foreach (var s in readable)
        {
            var newest = s.Manifest!.Generation;
            var newestAt = s.Generations.First(g => Generation(g) == newest).LastModified;
            var doomed = forget.Contains(s.Key) ? s.Generations.Select(g => g.Key).Reverse().ToList()
                : newestAt < now - grace ? s.Generations.Where(g => Generation(g) < newest).Select(g => g.Key).ToList()
                : [];
            if (doomed.Count > 0)
            {
                doomedManifests.Add(doomed);
            }
        }

        var generationsDeleted = doomedManifests.Sum(d => d.Count) - forget.Count;
        long done = 0, total = doomedManifests.Sum(d => d.Count);
        if (!dryRun)
        {
            // The marker first: from its date on, the forgotten session's objects stay for one more grace period.
            await Parallel.ForEachAsync(readable.Where(s => forget.Contains(s.Key)), Parallel8(cancel), async (s, ct) =>
                await _store.PutAsync(RemoteLayout.Forgotten(s.Key), s.Manifest!.ToJson(), createOnly: false, ct).ConfigureAwait(false)).ConfigureAwait(false);
            await Parallel.ForEachAsync(doomedManifests, Parallel8(cancel), async (names, ct) =>
            {
                foreach (var name in names)
                {
                    lease!.Check();
                    await _store.DeleteAsync(name, ct).ConfigureAwait(false);
                    progress?.Invoke(Interlocked.Increment(ref done), total);
                }
            }).ConfigureAwait(false);
            foreach (var key in forget)
            {
                _trace.DropCached(key);
            }
        }

        // What the manifests name now (listed again: a writer may have published meanwhile), and what the sessions
        // forgotten less than the grace ago named; then every object, listed after that, so an object a writer names
        // after this listing is younger than the cutoff.
        var listedAt = _time.GetUtcNow();
        var cutoff = listedAt - grace;
        var remaining = dryRun ? readable.Where(s => !forget.Contains(s.Key)).ToList() : await _trace.ListAsync(cancel).ConfigureAwait(false);
        var named = Names(await NamingAsync(remaining, [.. doomedManifests.SelectMany(d => d)], cancel).ConfigureAwait(false));
        var markers = await _store.ListAsync(RemoteLayout.ForgottenPrefix, cancel).ConfigureAwait(false);
        var (recent, sweep) = await RecentlyForgottenAsync(markers, cutoff, cancel).ConfigureAwait(false);
        if (dryRun && grace > TimeSpan.Zero)
        {
            recent.AddRange(readable.Where(s => forget.Contains(s.Key)).Select(s => s.Manifest!)); // the markers it would write
        }

        var kept = Names(recent);
        var objects = new List<ObjectInfo>();
        foreach (var prefix in new[] { RemoteLayout.IndexPrefix, RemoteLayout.PacksPrefix, RemoteLayout.SegmentsPrefix })
        {
            objects.AddRange(await _store.ListAsync(prefix, cancel).ConfigureAwait(false));
        }

        // An unnamed pack goes with its index (index first), and only when both are older than the grace.
        var units = new List<List<ObjectInfo>>();
        int keptObjects = 0;
        long keptBytes = 0;
        foreach (var group in objects.Where(o => !named.Contains(o.Key)).GroupBy(UnitOf).Where(g => g.Key is not null))
        {
            var unit = group.OrderBy(o => o.Key.StartsWith(RemoteLayout.IndexPrefix, StringComparison.Ordinal) ? 0 : 1).ToList();
            if (sweep && unit.All(o => o.LastModified < cutoff && !kept.Contains(o.Key)))
            {
                units.Add(unit);
            }
            else
            {
                keptObjects += unit.Count;
                keptBytes += unit.Sum(o => o.Size);
            }
        }

        var deleted = units.SelectMany(u => u).ToList();
        if (!dryRun)
        {
            total = done + deleted.Count;
            await Parallel.ForEachAsync(units, Parallel8(cancel), async (unit, ct) =>
            {
                foreach (var o in unit)
                {
                    lease!.Check();
                    await _store.DeleteAsync(o.Key, ct).ConfigureAwait(false);
                    progress?.Invoke(Interlocked.Increment(ref done), total);
                }
            }).ConfigureAwait(false);

            // A marker goes once its grace is over and what it kept was swept (this run, above).
            foreach (var m in markers.Where(m => m.LastModified < cutoff && sweep))
            {
                lease!.Check();
                await _store.DeleteAsync(m.Key, cancel).ConfigureAwait(false);
            }
        }

        bool Is(ObjectInfo o, string prefix) => o.Key.StartsWith(prefix, StringComparison.Ordinal);
        return new ForgetResult(
            [.. readable.Select((s, i) => (Number: (long)i + 1, s)).Where(x => forget.Contains(x.s.Key)).Select(x => (x.Number, x.s.Manifest!))],
            readable.Count - forget.Count,
            live,
            generationsDeleted,
            deleted.Count(o => Is(o, RemoteLayout.PacksPrefix)),
            deleted.Where(o => Is(o, RemoteLayout.PacksPrefix)).Sum(o => o.Size),
            deleted.Count(o => Is(o, RemoteLayout.IndexPrefix)),
            deleted.Count(o => Is(o, RemoteLayout.SegmentsPrefix)),
            deleted.Where(o => Is(o, RemoteLayout.SegmentsPrefix)).Sum(o => o.Size),
            keptObjects,
            keptBytes);
    }

    /// <summary>
    /// The last manifests of the sessions forgotten less than the grace ago (their markers younger than
    /// <paramref name="cutoff"/>). False when one of them does not read: what it keeps is unknown, so nothing is swept.
    /// </summary>
    private async Task<(List<SessionManifest> Manifests, bool Sweep)> RecentlyForgottenAsync(List<ObjectInfo> markers, DateTimeOffset cutoff, CancellationToken cancel)
    {
        var manifests = new List<SessionManifest>();
        foreach (var marker in markers.Where(m => m.LastModified >= cutoff))
        {
            try
            {
                if (await _store.GetAsync(marker.Key, cancel: cancel).ConfigureAwait(false) is { } bytes)
                {
                    manifests.Add(SessionManifest.Parse(marker.Key, bytes));
                }
            }
            catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
            {
                TraceReader.Warning?.Invoke($"{e.Message}. Nothing unnamed is deleted this time: what that forgotten session named is unknown; delete {_store.Name}/{marker.Key} if it stays damaged");
                return (manifests, false);
            }
        }

        return (manifests, true);
    }

    /// <summary>
    /// The manifests that keep objects: every session's newest readable generation, and its older generations not
    /// deleted (<paramref name="doomed"/>): they go only once the newest is older than the grace, and until then
    /// what only they name stays. A damaged older generation names nothing anyone can read.
    /// </summary>
    private async Task<List<SessionManifest>> NamingAsync(List<RemoteSession> sessions, HashSet<string> doomed, CancellationToken cancel)
    {
        var manifests = new List<SessionManifest>();
        foreach (var s in sessions.Where(s => s.Manifest is not null))
        {
            manifests.Add(s.Manifest!);
            foreach (var g in s.Generations.Where(g => Generation(g) < s.Manifest!.Generation && !doomed.Contains(g.Key)))
            {
                try
                {
                    if (await _trace.ManifestAsync(s.Key, Generation(g), cancel).ConfigureAwait(false) is { } older)
                    {
                        manifests.Add(older);
                    }
                }
                catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
                {
                    // skipped by every reader too
                }
            }
        }

        return manifests;
    }

    /// <summary>Every object the manifests name: segments, their bases, packs and the packs' indexes.</summary>
    private static HashSet<string> Names(IEnumerable<SessionManifest> manifests)
    {
        var named = new HashSet<string>(StringComparer.Ordinal);
        foreach (var m in manifests)
        {
            named.Add(RemoteLayout.Segment(m.Segment));
            if (m.SegmentBase is { } segmentBase)
            {
                named.Add(RemoteLayout.Segment(segmentBase));
            }

            foreach (var p in m.Packs)
            {
                named.Add(RemoteLayout.Pack(p));
                named.Add(RemoteLayout.Index(p));
            }
        }

        return named;
    }

    /// <summary>
    /// The keys of the sessions to forget. A retention rule never forgets a keep-mode session that is still being
    /// written (state <c>recording</c>, a generation younger than the grace): its next cut would bring it back.
    /// </summary>
    private HashSet<string> Select(List<RemoteSession> readable, ForgetSelection selection, TimeSpan grace, DateTimeOffset now, out int live)
    {
        live = 0;
        var keys = new HashSet<string>(StringComparer.Ordinal);
        if (selection.Numbers.Count > 0 && readable.Count == 0)
        {
            throw new DiffKeeperException(ExitCode.NoTrace, $"no session at {_store.Name} (no manifest under sessions/)");
        }

        foreach (var n in selection.Numbers)
        {
            if (n < 1 || n > readable.Count)
            {
                throw new DiffKeeperException(ExitCode.NotFound, $"{_store.Name} has no session {n}; it has sessions 1 to {readable.Count}");
            }

            keys.Add(readable[(int)n - 1].Key);
        }

        if (!selection.ByRule)
        {
            return keys;
        }

        var within = selection.KeepWithin is { } w ? (now - w).ToUnixTimeMilliseconds() * 1_000_000 : (long?)null;
        for (var i = 0; i < readable.Count; i++)
        {
            var m = readable[i].Manifest!;
            var kept = (selection.KeepLast is { } last && i >= readable.Count - last) || (within is { } from && m.StartedWallNs >= from);
            if (kept)
            {
                continue;
            }

            if (m.State == "recording" && readable[i].Generations[0].LastModified > now - grace)
            {
                live++;
                continue;
            }

            keys.Add(readable[i].Key);
        }

        return keys;
    }

    /// <summary>The pack a pack or index object belongs to, the segment object itself, or null for any other key.</summary>
    private static string? UnitOf(ObjectInfo o) =>
        RemoteLayout.ObjectSha(o.Key, RemoteLayout.PacksPrefix, ".pack") is { } pack ? "pack:" + pack
        : RemoteLayout.ObjectSha(o.Key, RemoteLayout.IndexPrefix, ".idx") is { } index ? "pack:" + index
        : RemoteLayout.ObjectSha(o.Key, RemoteLayout.SegmentsPrefix, ".seg") is { } segment ? "segment:" + segment
        : null;

    private static long Generation(ObjectInfo manifest) => RemoteLayout.ParseManifest(manifest.Key)!.Value.Generation;

    private static ParallelOptions Parallel8(CancellationToken cancel) => new() { MaxDegreeOfParallelism = 8, CancellationToken = cancel };
}
