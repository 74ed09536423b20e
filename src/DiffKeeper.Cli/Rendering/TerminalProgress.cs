using System.Diagnostics;
using System.Globalization;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Cli.Rendering;

/// <summary>
/// One progress line on stderr for an operation that takes more than about a second (export, restore, verify, gc):
/// only when stderr is a terminal, rewritten in place (<c>\r</c>, then <c>ESC[K</c> to erase what a longer line
/// left), at most ten times a second, and erased on <see cref="Dispose"/> so the summary that follows starts on a
/// clean line. On a pipe or file nothing at all is written. Neither sequence changes a terminal mode, so the
/// terminal is left as found. The delay before the first line is 1 s, or DIFFKEEPER_PROGRESS_DELAY_MS.
/// Thread-safe: a line may be reported from any thread.
/// </summary>
public sealed class TerminalProgress : IDisposable
{
    /// <summary>Lines are cut to this many characters: a line that wraps cannot be rewritten with <c>\r</c>.</summary>
    private const int Width = 79;

    private static readonly long Interval = Stopwatch.Frequency / 10;
    private readonly TextWriter? _error;
    private readonly long _delay;
    private readonly long _start = Stopwatch.GetTimestamp();
    private readonly Lock _lock = new();
    private long _last;
    private bool _shown;

    private TerminalProgress(TextWriter? error, TimeSpan delay)
    {
        _error = error;
        _delay = (long)(delay.TotalSeconds * Stopwatch.Frequency);
    }

    /// <summary>Progress on <paramref name="console"/>'s stderr when file descriptor 2 is a terminal, else a no-op.</summary>
    public static TerminalProgress ForStderr(IConsole console) =>
        new(Libc.Isatty(2) == 1 ? console.Error : null, Delay());

    private static TimeSpan Delay() =>
        int.TryParse(Environment.GetEnvironmentVariable("DIFFKEEPER_PROGRESS_DELAY_MS"), NumberStyles.None, CultureInfo.InvariantCulture, out var ms)
            ? TimeSpan.FromMilliseconds(ms)
            : TimeSpan.FromSeconds(1);

    /// <summary>Shows <paramref name="line"/> if the operation has run long enough and the last line is old enough.</summary>
    public void Show(string line)
    {
        if (!Due(out var now))
        {
            return;
        }

        lock (_lock)
        {
            Volatile.Write(ref _last, now);
            _shown = true;
            _error.Write($"\r{(line.Length > Width ? line[..Width] : line)}\u001b[K");
            _error.Flush();
        }
    }

    /// <summary>Whether a line reported now would be shown (the time, for <see cref="Show"/>).</summary>
    [System.Diagnostics.CodeAnalysis.MemberNotNullWhen(true, nameof(_error))]
    private bool Due(out long now)
    {
        now = Stopwatch.GetTimestamp();
        return _error is not null && now - _start >= _delay && !(_shown && now - Volatile.Read(ref _last) < Interval);
    }

    /// <summary>A reporter for a tree being written: entries done of total and bytes.</summary>
    public IProgress<DiffKeeper.Replay.TreeProgress> Tree(string verb) => Of<DiffKeeper.Replay.TreeProgress>(p =>
        string.Create(CultureInfo.InvariantCulture, $"{verb}: {p.Done:N0} of {p.Total:N0} entries, {TimelineRenderer.FormatSize(p.Bytes)}"));

    /// <summary>
    /// A reporter that shows each value through <paramref name="format"/>, formatted only when it would be shown (an
    /// export reports every file, and on a pipe nothing is ever shown).
    /// </summary>
    public IProgress<T> Of<T>(Func<T, string> format) => new Reporter<T>(v =>
    {
        if (Due(out _))
        {
            Show(format(v));
        }
    });

    public void Dispose()
    {
        lock (_lock)
        {
            if (_shown && _error is not null)
            {
                _error.Write("\r\u001b[K");
                _error.Flush();
                _shown = false;
            }
        }
    }

    /// <summary>Reports synchronously on the caller's thread (Progress&lt;T&gt; would post to the thread pool and race the clear).</summary>
    private sealed class Reporter<T>(Action<T> show) : IProgress<T>
    {
        public void Report(T value) => show(value);
    }
}
