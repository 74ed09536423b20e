using System.Globalization;
using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Recording.Agent;

namespace DiffKeeper.Cli.Metrics;

/// <summary>
/// The agent's counters in the Prometheus text exposition format 0.0.4, written by hand (no Prometheus library
/// is in the reachable registries). Each family is one HELP line, one TYPE line and its samples, families never
/// interleave, label values and help text are escaped, numbers use the invariant culture with +Inf and NaN as
/// the format spells them. Checked by `promtool check metrics` in the integration tests.
/// </summary>
public sealed class PrometheusExposition
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private readonly StringBuilder _text = new();

    public static string Render(AgentCounters c, string version, string capture)
    {
        var x = new PrometheusExposition();
        x.Family("diffkeeper_build_info", "gauge", "Build of this diffkeeper; the value is always 1.");
        x.Sample("diffkeeper_build_info", 1, ("version", version), ("capture", capture));
        x.Family("diffkeeper_capture_events_total", "counter", "Changes the capture backend reported, by operation.");
        foreach (var op in new[] { ChangeOp.Create, ChangeOp.Write, ChangeOp.Truncate, ChangeOp.Rename, ChangeOp.Delete, ChangeOp.Chmod, ChangeOp.Mkdir, ChangeOp.Rmdir, ChangeOp.Symlink, ChangeOp.Lost })
        {
            x.Sample("diffkeeper_capture_events_total", c.Events(op), ("op", op.ToString().ToLowerInvariant()));
        }

        x.Single("diffkeeper_versions_total", "counter", "Versions stored by this agent (baseline included).", c.Versions);
        x.Single("diffkeeper_lost_events_total", "counter", "Times the capture backend lost events (each followed by a full rescan).", c.LostEvents);
        x.Single("diffkeeper_cuts_total", "counter", "Consistent cuts committed to the store.", c.Cuts);
        x.Single("diffkeeper_frozen_cuts_total", "counter", "Cuts taken with the app's processes stopped.", c.FrozenCuts);
        x.Single("diffkeeper_freeze_timeouts_total", "counter", "Cuts where a thread of the app did not stop in time.", c.FreezeTimeouts);
        x.Single("diffkeeper_freeze_seconds_total", "counter", "Time the app spent stopped for cuts.", c.FreezeSeconds);
        x.Single("diffkeeper_disk_syncs_total", "counter", "fsyncs of the store's packs and catalog (power-loss durability points).", c.DiskSyncs);
        x.Single("diffkeeper_disk_sync_last_seconds", "gauge", "How long the latest fsync of the store took.", c.LastDiskSyncSeconds);
        x.Single("diffkeeper_stored_bytes", "gauge", "Bytes of pack records in the store.", c.StoredBytes);
        x.Single("diffkeeper_raw_bytes", "gauge", "Bytes of file content this agent read (every version in full).", c.RawBytes);
        x.Single("diffkeeper_dedup_ratio", "gauge", "Raw bytes read over bytes stored by this agent (dedup and compression); 0 before anything is stored.",
            c.StoredBytesWritten == 0 ? 0 : c.RawBytes / (double)c.StoredBytesWritten);
        x.Single("diffkeeper_recovery_duration_seconds", "gauge", "Time the restore before the app started took.", c.RecoverySeconds);
        x.Single("diffkeeper_recovery_files", "gauge", "Files the restore before the app started wrote.", c.RecoveryFiles);
        x.Single("diffkeeper_recovery_bytes", "gauge", "Bytes the restore before the app started wrote.", c.RecoveryBytes);
        x.Single("diffkeeper_queue_depth", "gauge", "Capture events waiting to be handled.", c.QueueDepth);
        x.Single("diffkeeper_app_up", "gauge", "1 while the app runs.", c.AppRunning ? 1 : 0);

        x.Single("diffkeeper_gc_runs_total", "counter", "Retention passes (prune, sweep, compaction, repack) completed; with --retain or --max-versions.", c.GcRuns);
        x.Single("diffkeeper_gc_failures_total", "counter", "Retention passes that failed (each logged; the next pass retries).", c.GcFailures);
        x.Single("diffkeeper_gc_running", "gauge", "1 while a retention pass runs.", c.GcRunning ? 1 : 0);
        x.Single("diffkeeper_pruned_versions_total", "counter", "Versions whose content retention dropped.", c.PrunedVersions);
        x.Single("diffkeeper_gc_swept_blobs_total", "counter", "Blobs retention deleted because no kept version needed them.", c.SweptBlobs);
        x.Single("diffkeeper_gc_freed_bytes_total", "counter", "Committed pack bytes retention passes freed.", c.GcFreedBytes);
        x.Single("diffkeeper_gc_steps_total", "counter", "Retention steps the agent ran between cuts (each one catalog transaction).", c.GcSteps);
        x.Single("diffkeeper_gc_step_seconds_total", "counter", "Time the agent spent in retention steps between cuts.", c.GcStepSeconds);
        x.Single("diffkeeper_gc_step_max_seconds", "gauge", "The longest retention step: the most a due cut waited for one.", c.GcStepMaxSeconds);
        x.Histogram("diffkeeper_flush_lag_seconds", "Time from a change being observed to its commit in the store.", c.FlushLag);
        x.Histogram("diffkeeper_cut_delay_seconds", "How late a cut started after it was due (the agent was handling events, running a retention step, or not scheduled).", c.CutDelay);
        x.Single("diffkeeper_cut_delay_max_seconds", "gauge", "The latest any cut started after it was due.", c.CutDelay.Read().Max);
        return x._text.ToString();
    }

    private void Histogram(string name, string help, Histogram histogram)
    {
        var (cumulative, count, sum, _) = histogram.Read();
        Family(name, "histogram", help);
        for (var i = 0; i < histogram.Bounds.Count; i++)
        {
            Sample(name + "_bucket", cumulative[i], ("le", Number(histogram.Bounds[i])));
        }

        Sample(name + "_bucket", count, ("le", "+Inf"));
        Sample(name + "_sum", sum);
        Sample(name + "_count", count);
    }

    private void Single(string name, string type, string help, double value)
    {
        Family(name, type, help);
        Sample(name, value);
    }

    private void Family(string name, string type, string help) =>
        _text.Append("# HELP ").Append(name).Append(' ').Append(help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal))
            .Append("\n# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    private void Sample(string name, double value, params (string Name, string Value)[] labels)
    {
        _text.Append(name);
        if (labels.Length > 0)
        {
            _text.Append('{');
            for (var i = 0; i < labels.Length; i++)
            {
                _text.Append(i == 0 ? "" : ",").Append(labels[i].Name).Append("=\"")
                    .Append(labels[i].Value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal))
                    .Append('"');
            }

            _text.Append('}');
        }

        _text.Append(' ').Append(Number(value)).Append('\n');
    }

    public static string Number(double value) => value switch
    {
        double.PositiveInfinity => "+Inf",
        double.NegativeInfinity => "-Inf",
        double.NaN => "NaN",
        _ => value.ToString("R", CultureInfo.InvariantCulture),
    };
}
