using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Ebpf;
using DiffKeeper.Capture.Fanotify;
using DiffKeeper.Capture.Inotify;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;

namespace DiffKeeper.Recording;

/// <summary>
/// Starts the capture backend `--capture` asks for. With <see cref="CaptureMode.Auto"/>, tries eBPF, then fanotify,
/// then inotify, and logs one line for each better backend it skipped, with the reason (the kernel's errno when
/// the kernel refused). An explicitly requested backend that cannot start is an error.
/// </summary>
internal static class CaptureSelection
{
    public static ICaptureSource Start(RecordOptions options, PathFilter filter, ChannelWriter<CaptureEvent> sink, TextWriter log) =>
        Start(options.Capture, options.Roots, filter, sink, log, options.MaxPayload, options.RingBufferBytes, coalesceWrites: true,
            notes: options.Verbose ? log : null);

    /// <summary>
    /// Starts <paramref name="capture"/> (see the class comment) watching <paramref name="roots"/>; `run` passes its own
    /// roots. <paramref name="notes"/> (`--verbose`) gets a line where a backend started through its fallback.
    /// </summary>
    public static ICaptureSource Start(CaptureMode capture, IReadOnlyList<string> roots, PathFilter filter, ChannelWriter<CaptureEvent> sink,
        TextWriter log, int maxPayload, int ringBytes, bool coalesceWrites, TextWriter? notes = null)
    {
        var options = (Capture: capture, Roots: roots, MaxPayload: maxPayload, RingBufferBytes: ringBytes, CoalesceWrites: coalesceWrites, Notes: notes);
        var order = options.Capture == CaptureMode.Auto
            ? [CaptureMode.Ebpf, CaptureMode.Fanotify, CaptureMode.Inotify]
            : new[] { options.Capture };
        foreach (var mode in order)
        {
            ICaptureSource? source = null;
            try
            {
                source = Create(mode, options, filter);
                source.Start(sink);
                return source;
            }
            catch (DiffKeeperException e) when (options.Capture == CaptureMode.Auto && mode != CaptureMode.Inotify)
            {
                source?.DisposeAsync().AsTask().GetAwaiter().GetResult();
                log.WriteLine($"diffkeeper: capture: not using {Name(mode)}: {e.Message}");
            }
            catch
            {
                source?.DisposeAsync().AsTask().GetAwaiter().GetResult();
                throw;
            }
        }

        throw new InvalidOperationException("inotify is always tried last");
    }

    public static string Name(CaptureMode mode) => mode.ToString().ToLowerInvariant();

    private static ICaptureSource Create(CaptureMode mode,
        (CaptureMode Capture, IReadOnlyList<string> Roots, int MaxPayload, int RingBufferBytes, bool CoalesceWrites, TextWriter? Notes) options, PathFilter filter) => mode switch
    {
        CaptureMode.Ebpf => new EbpfSource(options.Roots, filter) { MaxPayload = options.MaxPayload, RingBytes = options.RingBufferBytes, Notes = options.Notes },
        CaptureMode.Fanotify => new FanotifySource(options.Roots, filter),
        CaptureMode.Inotify => new InotifySource(options.Roots, filter) { CoalesceWrites = options.CoalesceWrites },
        CaptureMode.Scan => new ScanSource(),
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, null),
    };
}
