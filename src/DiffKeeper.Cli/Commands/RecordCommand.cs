using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Recording;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Cli.Commands;

internal static class RecordCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var watch = new Option<string[]>("--watch", "-w")
        {
            Description = "Directory tree to record; repeat for several (default: the current directory)",
            HelpName = "DIR",
            AllowMultipleArgumentsPerToken = false,
        };
        var exclude = new Option<string[]>("--exclude", "-x")
        {
            Description = "Do not record paths matching GLOB ('*' within a name, '**' across names; without '/', matches any name); repeatable",
            HelpName = "GLOB",
        };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Do not print the summary line at the end" };
        var verbose = new Option<bool>("--verbose", "-v")
        {
            Description = "Say on stderr where the start fell back and why (the eBPF programs loaded by libbpf instead of the light skeleton)",
        };
        var json = new Option<bool>("--json")
        {
            Description = "Print the summary as one JSON object on stderr (stdout is the command's): session, trace, exit_code, events, versions, lost_events, raw_bytes, stored_bytes, big_file_bytes_read, big_file_versions_from_writes, pack_bytes_before_compaction, pack_bytes_after_compaction, contents_kept",
        };
        var capture = CaptureOption.Create(
            "Capture backend: auto (eBPF, else fanotify, else inotify, saying why), ebpf, fanotify, inotify, or scan (before/after only)",
            "auto", "ebpf", "fanotify", "inotify", "scan");
        var maxPayload = new Option<int>("--max-payload")
        {
            Description = "eBPF: bytes of each write carried with its event (at most 262144); larger writes are read back from the file",
            HelpName = "BYTES",
            DefaultValueFactory = _ => 256 * 1024,
        }.Expecting("a number of bytes from 0 to 262144", n => n is >= 0 and <= 256 * 1024);
        var bigFile = BigFileOption.Create();
        var ring = new Option<int>("--ring-buffer")
        {
            Description = "eBPF: MiB of kernel memory for events on their way to diffkeeper (a power of two); when it is full, events are lost, reported as LOST, and the trees rescanned",
            HelpName = "MIB",
            DefaultValueFactory = _ => 64,
        }.Expecting("a power of two from 1 to 1024 (MiB)", mib => mib is >= 1 and <= 1024 && (mib & (mib - 1)) == 0);
        var keep = new Option<string>("--keep")
        {
            Description = "always: keep the session's file contents; on-failure: drop them at the end when the command exits 0 " +
                          "(summary and timeline stay; export of that session then exits 12)",
            HelpName = "WHEN",
            DefaultValueFactory = _ => "always",
        }.ExpectingOneOf("always", "on-failure");
        var maxTraceSize = new Option<long?>("--max-trace-size")
        {
            Description = "Keep the trace's files (catalog and packs, every session in it) under SIZE (bytes, or with K, M, G: 500M, 2G; at least 1M) " +
                          "as a ring: past half of SIZE the oldest file contents are dropped first, and every event stays in the timeline " +
                          "(export of a moment whose content went exits 12). If that cannot keep the trace under SIZE, the recording stops " +
                          "storing: one line on stderr, the command runs on, the session ends with LOST and EXIT, and record still exits with the command's code",
            HelpName = "SIZE",
            CustomParser = r =>
            {
                var bytes = BigFileOption.ParseSize(r, "--max-trace-size");
                if (bytes is > 0 and < TraceSizeLimit.Minimum)
                {
                    r.AddError($"--max-trace-size must be at least 1M (an empty trace's catalog takes about 100K), got '{r.Tokens[^1].Value}'");
                }

                return bytes;
            },
        };
        var noCompact = new Option<bool>("--no-compact")
        {
            Description = "Leave the trace as recorded: skip the compaction during and after the command (what 'diffkeeper gc' does: older versions re-encoded as deltas, garbage repacked); 'gc' can run it later",
        };
        var command = new Argument<string[]>("command")
        {
            Description = "The command to run and record, after '--'",
            Arity = ArgumentArity.OneOrMore,
        };
        var cmd = new Command("record", """
            Run a command and record every change it makes to the watched trees.
            Files already there are recorded first (baseline). Exits with the command's exit code (126/127 when it
            cannot run, 128+N when killed by signal N). SIGINT/SIGTERM/SIGHUP/SIGQUIT are forwarded to the command.
            Recording into an existing trace adds a new session. With --keep on-failure, a run that passes leaves only
            its summary and timeline (a flaky test recorded on every run keeps the bytes of its failures only).
            With --max-trace-size the trace stays under a size as a ring (oldest contents dropped first, every event kept).
            The trace is compacted as 'diffkeeper gc' does, at low priority: in the background while the command
            runs, and to the end once the session is closed (killing diffkeeper then is safe: the recording is
            complete and the next 'record' or 'gc' finishes the job); --no-compact skips that.
            Example: diffkeeper record --trace /tmp/t -- make test
            """)
        {
            trace, watch, exclude, quiet, verbose, json, capture, maxPayload, ring, bigFile, noCompact, keep, maxTraceSize, command,
        };
        cmd.SetAction(async (pr, ct) =>
        {
            var cwd = Directory.GetCurrentDirectory();
            var roots = (pr.GetValue(watch) is { Length: > 0 } w ? w : [cwd]).Select(r => Path.GetFullPath(r).TrimEnd('/')).Select(r => r.Length == 0 ? "/" : r).ToList();
            foreach (var root in roots)
            {
                // Directory.Exists cannot name a path that is not UTF-8 (RawArguments keeps its bytes); lstat can.
                if (!Directory.Exists(root) && DiffKeeper.Capture.Scan.EntryStat.Lstat(root) is var seen && seen is not { Kind: EntryKind.Directory })
                {
                    var display = PathBytes.Display(root);
                    throw new DiffKeeperException(ExitCode.Usage, Path.Exists(root) || seen is not null
                        ? $"--watch {display} is not a directory; give a directory to record" : $"--watch {display}: no such directory");
                }
            }

            foreach (var a in roots)
            {
                foreach (var b in roots.Where(b => !ReferenceEquals(a, b) && TracePath.IsAtOrBelow(b, a == "/" ? "" : a)))
                {
                    throw new DiffKeeperException(ExitCode.Usage, $"--watch {b} lies inside --watch {a}; give only the outer one");
                }
            }

            var options = new RecordOptions(pr.GetValue(trace)!, roots, (pr.GetValue(exclude) ?? []).Select(g => new Glob(g)).ToList(),
                pr.GetValue(command)!, cwd)
            {
                Capture = CaptureOption.Parse(pr.GetValue(capture)!),
                MaxPayload = pr.GetValue(maxPayload),
                RingBufferBytes = pr.GetValue(ring) << 20,
                BigFileThreshold = pr.GetValue(bigFile),
                Compact = !pr.GetValue(noCompact),
                MaxTraceSize = pr.GetValue(maxTraceSize),
                Verbose = pr.GetValue(verbose),
            };
            var result = await new Recorder(options, console.Error).RunAsync(ct).ConfigureAwait(false);
            if (Environment.GetEnvironmentVariable("DIFFKEEPER_GC_STATS") == "1")
            {
                // What the recording allocated and collected (dotnet-counters cannot attach to a NativeAOT binary).
                console.Error.WriteLine($"diffkeeper: gc: allocated {GC.GetTotalAllocatedBytes(precise: true)} bytes, collections gen0 {GC.CollectionCount(0)}, gen1 {GC.CollectionCount(1)}, gen2 {GC.CollectionCount(2)}, pause {GC.GetTotalPauseDuration().TotalMilliseconds:0} ms");
            }

            var dropped = pr.GetValue(keep) == "on-failure" && result.ExitCode == 0 ? DropContents(options.TraceDir, result) : null;
            if (pr.GetValue(json))
            {
                JsonSummary.ToStderr(console, j =>
                {
                    j.WriteNumber("session", result.SessionId);
                    j.WriteString("trace", Path.GetFullPath(options.TraceDir));
                    j.WriteNumber("exit_code", result.ExitCode);
                    j.WriteNumber("events", result.Events);
                    j.WriteNumber("versions", result.Versions);
                    j.WriteNumber("lost_events", result.LostEvents);
                    j.WriteNumber("raw_bytes", result.RawBytes);
                    j.WriteNumber("stored_bytes", result.StoredBytes);
                    j.WriteNumber("big_file_bytes_read", result.BigFileBytesRead);
                    j.WriteNumber("big_file_versions_from_writes", result.BigFileVersionsFromWrites);
                    if (result.PackBytesAfter is { } after)
                    {
                        j.WriteNumber("pack_bytes_before_compaction", result.PackBytesBefore!.Value);
                        j.WriteNumber("pack_bytes_after_compaction", after);
                    }
                    else
                    {
                        j.WriteNull("pack_bytes_before_compaction");
                        j.WriteNull("pack_bytes_after_compaction");
                    }

                    j.WriteBoolean("contents_kept", dropped is null);
                });
            }
            else if (!pr.GetValue(quiet))
            {
                console.Error.WriteLine(
                    $"diffkeeper: recorded session {result.SessionId} into {Path.GetFullPath(options.TraceDir)}: {result.Events} events, {result.Versions} versions, " +
                    $"{TimelineRenderer.FormatSize(result.RawBytes)} read, {TimelineRenderer.FormatSize(result.StoredBytes)} stored" +
                    (result.LostEvents > 0 ? $", {result.LostEvents} LOST (rescanned)" : "") +
                    (result.PackBytesAfter is { } after ? $"; trace packs {TimelineRenderer.FormatSize(result.PackBytesBefore!.Value)} -> {TimelineRenderer.FormatSize(after)} compacted" : ""));
                if (dropped is { } d)
                {
                    console.Error.WriteLine(
                        $"diffkeeper: the command succeeded: file contents not kept (--keep on-failure); {d.VersionsPruned} versions dropped, " +
                        $"packs {TimelineRenderer.FormatSize(d.PackBytesBefore)} -> {TimelineRenderer.FormatSize(d.PackBytesAfter)}; summary and timeline kept");
                }
            }

            return result.ExitCode;
        });
        return cmd;
    }

    /// <summary>
    /// --keep on-failure after a success: one call, after the session is finished and the recorder has released the
    /// trace, that prunes the session's contents as 'prune' does and collects the bytes.
    /// </summary>
    private static MaintenanceResult DropContents(string traceDir, RecordResult result) =>
        SessionContents.Drop(traceDir, result.SessionId, SessionContents.CommandSucceeded, DateTimeOffset.UtcNow);
}
