using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Write runs (store format 7, docs/store-format.md, "Write runs"): consecutive writes of one process to one path are
/// one events row, and every reader sees exactly the events it saw with one row per event. Real catalogs on disk.
/// </summary>
public sealed class EventRunTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Trace => _dir.Sub("t");

    /// <summary>What a reader returns for an event the writer was given (paths by name; the session is the only one).</summary>
    private static (long, long, ChangeOp, string?, string?, long?, int?, string?, string?, long?, long?) Shown(EventRecord e) =>
        (e.Seq, e.TimeNs, e.Op, e.Path, e.Path2, e.Size, e.Pid, e.Comm, e.Detail, e.Offset, e.Length);

    private sealed record Given(long Seq, long TimeNs, ChangeOp Op, string? Path, string? Path2, long? Size, int? Pid, string? Comm, string? Detail, long? Offset, long? Length)
    {
        public (long, long, ChangeOp, string?, string?, long?, int?, string?, string?, long?, long?) Shown => (Seq, TimeNs, Op, Path, Path2, Size, Pid, Comm, Detail, Offset, Length);
    }

    /// <summary>
    /// A write storm with everything that must break a run: another pid, comm, path, op, a detail, a second path, a
    /// column NULL in one and not the other, time going back, a seq gap, more than a run's cap, and commits. Fixed seed.
    /// </summary>
    private static List<Given> Storm(int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<Given>();
        long seq = 0, time = 1_000, size = 0, offset = 0;
        for (var i = 0; i < count; i++)
        {
            var steady = i < 5_000; // first one long stretch of plain appends: runs at their cap
            seq += !steady && rng.Next(100) == 0 ? 2 : 1; // a gap now and then (a parked event written later elsewhere)
            time += !steady && rng.Next(20) == 0 ? -rng.Next(5_000) : rng.Next(3_000);
            var kind = steady ? 60 : rng.Next(60);
            var len = !steady && rng.Next(10) == 0 ? rng.Next(70_000) : 16;
            var at = !steady && rng.Next(15) == 0 ? rng.Next(1_000_000) : offset; // a seek now and then, backwards too
            offset = at + len;
            size = Math.Max(size, offset);
            list.Add(kind switch
            {
                0 => new Given(seq, time, ChangeOp.Write, "a", null, size, 43, "other", null, at, len),
                1 => new Given(seq, time, ChangeOp.Write, "a", null, size, 42, "writer2", null, at, len),
                2 => new Given(seq, time, ChangeOp.Write, "b", null, size, 42, "writer", null, at, len),
                3 => new Given(seq, time, ChangeOp.Truncate, "a", null, 0, 42, "writer", null, null, null),
                4 => new Given(seq, time, ChangeOp.Write, "a", null, size, 42, "writer", "read back", at, len),
                5 => new Given(seq, time, ChangeOp.Rename, "a", "c", size, 42, "writer", null, null, null),
                6 => new Given(seq, time, ChangeOp.Write, "a", null, null, 42, "writer", null, at, len),
                7 => new Given(seq, time, ChangeOp.Write, "a", null, size, null, null, null, null, null),
                8 => new Given(seq, time, ChangeOp.Write, "a", null, size, 42, "writer", null, at, null),
                _ => new Given(seq, time, ChangeOp.Write, "a", null, size, 42, "writer", null, at, len),
            });
        }

        return list;
    }

    /// <summary>Writes the events into a new session, committing after those whose index is in <paramref name="commitAfter"/>.</summary>
    private long Write(IReadOnlyList<Given> events, Func<int, bool> commitAfter)
    {
        using var w = TraceWriter.Open(Trace);
        var sid = w.BeginSession("test", _dir.Path, "ebpf", 1_000_000_000, [_dir.Path], out var roots);
        for (var i = 0; i < events.Count; i++)
        {
            var g = events[i];
            w.AddEvent(sid, new NewEvent(g.Seq, g.TimeNs, g.Op, g.Path is null ? null : w.PathId(roots[0], g.Path),
                g.Path2 is null ? null : w.PathId(roots[0], g.Path2), g.Size, g.Pid, g.Comm, g.Detail, g.Offset, g.Length));
            if (commitAfter(i))
            {
                w.Commit();
            }
        }

        w.FinishSession(sid, events[^1].TimeNs, 0, 0);
        return sid;
    }

    private long Rows(string where = "1")
    {
        using var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: true);
        using var c = db.Prepare($"SELECT count(*) FROM events WHERE {where}");
        return c.ScalarInt64() ?? 0;
    }

    [Fact]
    public void Every_reader_sees_each_event_of_a_storm_as_it_was_written()
    {
        var events = Storm(12_000, 11);
        var rng = new Random(5);
        Write(events, _ => rng.Next(3_000) == 0);

        using var r = TraceReader.Open(Trace);
        var s = r.Session(null);
        Assert.Equal(events.Select(g => g.Shown), r.Events(s).Select(Shown));
        Assert.Equal(events[^1].Seq, r.MaxSeq(s));
        Assert.True(Rows() < events.Count / 5, $"{Rows()} rows for {events.Count} events");
        Assert.True(Rows("run IS NOT NULL AND length(run) > 4095 * 3") > 0); // a run reached its cap

        // Windows of seq numbers, starting inside runs, at their first and last events, and outside the session.
        foreach (var (from, to) in new[] { (0L, 0L), (1L, 1L), (2L, 5000L), (4097L, 4097L), (777L, 9000L), (events[^1].Seq, long.MaxValue), (events[^1].Seq + 1, long.MaxValue) })
        {
            Assert.Equal(events.Where(g => g.Seq >= from && g.Seq <= to).Select(g => g.Shown), r.Events(s, from, to).Select(Shown));
        }

        // The last event at or before a time: as max(seq) over one row per event said.
        foreach (var t in events.Select(g => g.TimeNs).Where((_, i) => i % 37 == 0).Concat([0, long.MaxValue, events[5].TimeNs - 1]))
        {
            Assert.Equal(events.Where(g => g.TimeNs <= t).Select(g => g.Seq).DefaultIfEmpty(0).Max(), r.SeqAtTime(s, t));
        }

        Assert.True(TraceVerifier.Verify(r).Ok);
    }

    [Fact]
    public void A_run_never_spans_a_commit_and_what_was_not_committed_is_given_up()
    {
        var a = Enumerable.Range(1, 300).Select(i => new Given(i, i * 10, ChangeOp.Write, "a", null, i * 16, 7, "w", null, (i - 1) * 16, 16)).ToList();
        using (var w = TraceWriter.Open(Trace))
        {
            var sid = w.BeginSession("test", _dir.Path, "ebpf", 1_000_000_000, [_dir.Path], out var roots);
            var path = w.PathId(roots[0], "a");
            void Add(Given g) => w.AddEvent(sid, new NewEvent(g.Seq, g.TimeNs, g.Op, path, null, g.Size, g.Pid, g.Comm, g.Detail, g.Offset, g.Length));
            a.Take(100).ToList().ForEach(Add);
            w.Commit();
            a.Skip(100).Take(100).ToList().ForEach(Add);
            w.Commit();
            using (var r = TraceReader.Open(Trace))
            {
                Assert.Equal(a.Take(200).Select(g => g.Shown), r.Events(r.Session(null)).Select(Shown)); // all that was committed
            }

            a.Skip(200).ToList().ForEach(Add); // in the open run only: given up with the transaction
            Assert.Equal(200, w.AbandonPending(sid));
        }

        Assert.Equal(2, Rows());
        using var reader = TraceReader.Open(Trace);
        Assert.Equal(a.Take(200).Select(g => g.Shown), reader.Events(reader.Session(null)).Select(Shown));
    }

    [Theory]
    [InlineData(50)] // inside the run
    [InlineData(2)] // the run's first follower: one event is left, a plain row
    [InlineData(1)] // the run's first event: the row goes
    [InlineData(100)] // its last event
    [InlineData(101)] // after it: nothing of the run changes
    public void Retracting_from_a_seq_inside_a_run_keeps_the_runs_events_before_it(long cut)
    {
        var a = Enumerable.Range(1, 100).Select(i => new Given(i, i * 10, ChangeOp.Write, "a", null, i * 16, 7, "w", null, (i - 1) * 16, 16))
            .Append(new Given(101, 2000, ChangeOp.Create, "b", null, 0, 7, "w", null, null, null)).ToList();
        using (var w = TraceWriter.Open(Trace))
        {
            var sid = w.BeginSession("test", _dir.Path, "ebpf", 1_000_000_000, [_dir.Path], out var roots);
            foreach (var g in a)
            {
                w.AddEvent(sid, new NewEvent(g.Seq, g.TimeNs, g.Op, w.PathId(roots[0], g.Path!), null, g.Size, g.Pid, g.Comm, g.Detail, g.Offset, g.Length));
            }

            w.Commit();
            Assert.Equal(101, w.AbandonPending(sid));
            w.RetractFrom(sid, cut);
            w.AddEvent(sid, new NewEvent(cut, 3000, ChangeOp.Lost, null, null, null, null, null, "storage failed"));
            w.FinishSession(sid, 3000, 0, 1);
        }

        using var r = TraceReader.Open(Trace);
        var s = r.Session(null);
        var expected = a.Where(g => g.Seq < cut).Select(g => g.Shown).Append((cut, 3000L, ChangeOp.Lost, null, null, null, null, null, "storage failed", null, null));
        Assert.Equal(expected, r.Events(s).Select(Shown));
        Assert.Equal(cut, r.MaxSeq(s));
        Assert.True(TraceVerifier.Verify(r).Ok);
    }

    [Fact]
    public void A_format_6_trace_reads_as_is_and_its_first_writer_migrates_it_to_7()
    {
        var first = Enumerable.Range(1, 20).Select(i => new Given(i, i * 10, ChangeOp.Write, "a", null, i * 16, 7, "w", null, (i - 1) * 16, 16)).ToList();
        using (var w = TraceWriter.Open(Trace))
        {
            w.BeginSession("test", _dir.Path, "ebpf", 1_000_000_000, [_dir.Path], out var roots);
            w.PathId(roots[0], "a");
            w.Commit();
        }

        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: false))
        {
            // What the format-6 code wrote: no run column, a row per event.
            db.Execute("ALTER TABLE events DROP COLUMN run; UPDATE meta SET value = '6' WHERE key = 'format_version'; UPDATE sessions SET state = 'finished', ended_ns = 300");
            using var insert = db.Prepare("INSERT INTO events(session_id, seq, time_ns, op, path_id, size, pid, comm, offset, length) VALUES (1, ?1, ?2, 2, 1, ?3, 7, 'w', ?4, ?5)");
            foreach (var g in first)
            {
                insert.Bind(1, g.Seq).Bind(2, g.TimeNs).Bind(3, g.Size).Bind(4, g.Offset).Bind(5, g.Length).Run();
            }
        }

        void Check(string version)
        {
            using var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: true);
            using var v = db.Prepare("SELECT value FROM meta WHERE key = 'format_version'");
            Assert.Equal(version, v.Step() ? v.String(0) : null);
            v.Reset();
            using var r = TraceReader.Open(Trace);
            var s = r.Sessions()[0];
            Assert.Equal(first.Select(g => g.Shown), r.Events(s).Select(Shown));
            Assert.Equal(20, r.MaxSeq(s));
            Assert.Equal(15, r.SeqAtTime(s, 155));
            Assert.True(TraceVerifier.Verify(r).Ok);
        }

        Check("6");
        var second = Enumerable.Range(1, 20).Select(i => new Given(i, i * 10, ChangeOp.Write, "a", null, i * 16, 7, "w", null, (i - 1) * 16, 16)).ToList();
        Write(second, _ => false); // the first writer adds the column, then writes a run
        Check("7");
        Assert.Equal(21, Rows());
        using var reader = TraceReader.Open(Trace);
        Assert.Equal(second.Select(g => g.Shown), reader.Events(reader.Sessions()[1]).Select(Shown));
    }

    public static TheoryData<string, string> Damages => new()
    {
        { "x'00'", "count 1 to 4095" },
        { "x'FF3F'", "count 1 to 4095" }, // 8191 followers
        { "x'05'", "damaged at event 1" }, // cut short
        { "x'01010000100A'", "1 bytes after its last event" },
        { "x'01FFFFFFFFFFFFFFFFFF7F000010'", "damaged at event 1 (time)" }, // a varint past 64 bits
        { "x'0101FFFFFFFFFFFFFFFF0110'", "damaged at event 1 (offset)" }, // zig-zag of -2^63: an offset below 0
        { "x'3F" + new string('0', 63 * 4 * 2) + "'", "inside the write run of an earlier row" }, // 63 followers reach into row 11
        { "'text'", "run is not NULL or a write run" },
    };

    [Theory]
    [MemberData(nameof(Damages))]
    public void A_damaged_run_is_refused_naming_its_row(string run, string words)
    {
        var a = Enumerable.Range(1, 10).Select(i => new Given(i, i * 10, ChangeOp.Write, "a", null, i * 16, 7, "w", null, (i - 1) * 16, 16))
            .Append(new Given(11, 200, ChangeOp.Create, "b", null, 0, 7, "w", null, null, null))
            .Concat(Enumerable.Range(12, 10).Select(i => new Given(i, i * 10, ChangeOp.Write, "a", null, i * 16, 7, "w", null, (i - 1) * 16, 16))).ToList();
        Write(a, _ => false);
        Assert.Equal(3, Rows());
        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: false))
        {
            db.Execute($"UPDATE events SET run = {run} WHERE seq = 1");
        }

        using var r = TraceReader.Open(Trace);
        var s = r.Session(null);
        var e = Assert.Throws<DiffKeeperException>(() => r.Events(s).ToList());
        Assert.Equal(ExitCode.Corrupt, e.Code);
        Assert.Contains(words.StartsWith("inside", StringComparison.Ordinal) ? "events row 1/11:" : "events row 1/1:", e.Message, StringComparison.Ordinal);
        Assert.Contains(words, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        var report = TraceVerifier.Verify(r);
        Assert.False(report.Ok);
        Assert.Contains(report.Problems, p => p.Contains("events row 1/", StringComparison.Ordinal));
        if (words.StartsWith("count", StringComparison.Ordinal))
        {
            // The last row read for the count of events: also the first (and only) one of a session.
            using var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: false);
            db.Execute("DELETE FROM events WHERE seq > 1");
            Assert.Equal(ExitCode.Corrupt, Assert.Throws<DiffKeeperException>(() => r.MaxSeq(s)).Code);
        }
    }

    [Fact]
    public void A_run_on_a_row_that_is_not_a_plain_write_is_outside_its_domain()
    {
        Write([new Given(1, 10, ChangeOp.Create, "a", null, 0, 7, "w", null, null, null), new Given(2, 20, ChangeOp.Write, "a", null, 16, 7, "w", null, 0, 16)], _ => false);
        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: false))
        {
            db.Execute("UPDATE events SET run = x'010000' WHERE seq = 1");
        }

        using var r = TraceReader.Open(Trace);
        var e = Assert.Throws<DiffKeeperException>(() => r.Events(r.Session(null)).ToList());
        Assert.Equal(ExitCode.Corrupt, e.Code);
        Assert.Contains("events row 1/1: run is not", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Writes_at_the_ends_of_the_integer_range_read_back_as_written()
    {
        var max = long.MaxValue;
        var events = new List<Given>
        {
            new(1, 10, ChangeOp.Write, "a", null, max, 7, "w", null, max - 16, 16),
            new(2, 20, ChangeOp.Write, "a", null, 16, 7, "w", null, 0, 16),
            new(3, 30, ChangeOp.Write, "a", null, max, 7, "w", null, max - 16, 16),
            new(4, 40, ChangeOp.Write, "a", null, -5, 7, "w", null, 0, max),
            new(5, 50, ChangeOp.Write, "a", null, 16, 7, "w", null, 0, 16),
            new(6, max, ChangeOp.Write, "a", null, 32, 7, "w", null, 16, 16),
            new(7, max, ChangeOp.Write, "a", null, 1L << 62, 7, "w", null, 1L << 62, 0),
        };
        Write(events, _ => false);
        using var r = TraceReader.Open(Trace);
        Assert.Equal(events.Select(g => g.Shown), r.Events(r.Session(null)).Select(Shown));
        Assert.True(TraceVerifier.Verify(r).Ok);
    }

    [Fact]
    public void A_run_decodes_to_what_was_encoded_and_cuts_to_its_prefix()
    {
        var builder = new EventRun.Builder();
        var first = new NewEvent(5, 100, ChangeOp.Write, 1, null, 16, 7, "w", null, 0, 16);
        builder.Start(1, first);
        var expected = new List<RunStep>();
        var rng = new Random(3);
        long time = 100, end = 16, size = 16;
        for (var seq = 6L; seq < 6 + EventRun.MaxFollowers; seq++)
        {
            time += rng.Next(100_000);
            var offset = rng.Next(4) == 0 ? rng.NextInt64(long.MaxValue / 4) : end;
            var length = rng.NextInt64(1 << 30);
            size = rng.NextInt64(long.MaxValue / 2);
            end = offset + length;
            expected.Add(new RunStep(seq, time, offset, length, size));
            Assert.True(builder.TryAppend(1, new NewEvent(seq, time, ChangeOp.Write, 1, null, size, 7, "w", null, offset, length)));
        }

        Assert.False(builder.TryAppend(1, new NewEvent(6 + EventRun.MaxFollowers, time, ChangeOp.Write, 1, null, size, 7, "w", null, end, 1))); // the cap
        var run = builder.Encoded();
        Assert.InRange(run.Length, 1, EventRun.MaxBytes);
        var head = new RunStep(5, 100, 0, 16, 16);
        var steps = new List<RunStep>();
        Assert.True(EventRun.TryDecode(run, head, steps, out var error), error);
        Assert.Equal(expected, steps);
        Assert.True(EventRun.TryDecode(EventRun.Cut(run, head, 17), head, steps, out error), error);
        Assert.Equal(expected.Take(17), steps);
        Assert.Null(EventRun.Cut(run, head, 0));
    }
}
