using System.Globalization;
using System.Text.RegularExpressions;

namespace DiffKeeper.Core;

/// <summary>
/// A moment of a session as the user writes it: a duration since start (<c>1.5s</c>, <c>2m14s</c>,
/// <c>1h2m3.25s</c>, <c>250ms</c>), an RFC 3339 time (<c>2026-11-22T03:30:00.123Z</c>), an event
/// (<c>#1234</c>: the state right after that event), <c>start</c> or <c>end</c>.
/// </summary>
public readonly partial record struct TimeSpec(TimeSpecKind Kind, long Value)
{
    public static TimeSpec End => new(TimeSpecKind.End, 0);

    public static TimeSpec Parse(string text)
    {
        if (TryParse(text, out var spec))
        {
            return spec;
        }

        throw new DiffKeeperException(ExitCode.Usage,
            $"cannot read the time '{text}': use a duration since start (1.5s, 2m14s, 1h2m3.25s, 250ms), " +
            "an RFC 3339 time (2026-11-22T03:30:00.123Z), an event (#1234), 'start' or 'end'");
    }

    public static bool TryParse(string text, out TimeSpec spec)
    {
        spec = default;
        var s = text.Trim();
        if (s.Length == 0)
        {
            return false;
        }

        if (s.Equals("start", StringComparison.OrdinalIgnoreCase))
        {
            spec = new TimeSpec(TimeSpecKind.Start, 0);
            return true;
        }

        if (s.Equals("end", StringComparison.OrdinalIgnoreCase))
        {
            spec = End;
            return true;
        }

        if (s[0] == '#')
        {
            if (long.TryParse(s.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out var seq))
            {
                spec = new TimeSpec(TimeSpecKind.Seq, seq);
                return true;
            }

            return false;
        }

        if (TryParseDuration(s, out var ns))
        {
            spec = new TimeSpec(TimeSpecKind.SinceStart, ns);
            return true;
        }

        if (s.Contains('T', StringComparison.Ordinal) &&
            DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var wall))
        {
            spec = new TimeSpec(TimeSpecKind.Wall, UnixNanos(wall, s));
            return true;
        }

        return false;
    }

    /// <summary>Parses <c>7d</c>, <c>1h2m3.25s</c>, <c>250ms</c>, <c>90us</c>, <c>5ns</c> or a bare number of seconds.</summary>
    public static bool TryParseDuration(string s, out long nanoseconds)
    {
        nanoseconds = 0;
        var m = DurationPattern().Match(s);
        if (!m.Success || m.Length == 0)
        {
            return false;
        }

        decimal total = 0;
        foreach (Capture part in m.Groups["part"].Captures)
        {
            var pm = PartPattern().Match(part.Value);
            var number = decimal.Parse(pm.Groups[1].Value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture);
            total += number * pm.Groups[2].Value switch
            {
                "d" => 86_400_000_000_000m,
                "h" => 3_600_000_000_000m,
                "m" => 60_000_000_000m,
                "s" or "" => 1_000_000_000m,
                "ms" => 1_000_000m,
                "us" => 1_000m,
                "ns" => 1m,
                _ => throw new InvalidOperationException("unreachable"),
            };
        }

        if (total > long.MaxValue)
        {
            return false;
        }

        nanoseconds = (long)total;
        return true;
    }

    // Fractions beyond the 100 ns that DateTimeOffset keeps are read from the text itself.
    private static long UnixNanos(DateTimeOffset wall, string text)
    {
        var ticks = wall.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        long ns = ticks * 100;
        var frac = FractionPattern().Match(text);
        if (frac.Success && frac.Groups[1].Value.Length > 7)
        {
            var digits = frac.Groups[1].Value.PadRight(9, '0')[..9];
            ns = ns / 1_000_000_000 * 1_000_000_000 + long.Parse(digits, CultureInfo.InvariantCulture);
        }

        return ns;
    }

    [GeneratedRegex(@"^(?<part>\d+(?:\.\d+)?(?:d|h|ms|us|ns|m|s))+$|^(?<part>\d+(?:\.\d+)?)$")]
    private static partial Regex DurationPattern();

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)(d|h|ms|us|ns|m|s|)$")]
    private static partial Regex PartPattern();

    [GeneratedRegex(@"T\d\d:\d\d:\d\d\.(\d+)")]
    private static partial Regex FractionPattern();

    public override string ToString() => Kind switch
    {
        TimeSpecKind.Start => "start",
        TimeSpecKind.End => "end",
        TimeSpecKind.Seq => $"#{Value}",
        TimeSpecKind.SinceStart => FormatDuration(Value),
        _ => DateTimeOffset.UnixEpoch.AddTicks(Value / 100).ToString("O", CultureInfo.InvariantCulture),
    };

    /// <summary>Formats nanoseconds since start as <c>00:02:14.123</c> (hours always, milliseconds always).</summary>
    public static string FormatDuration(long ns)
    {
        if (ns < 0)
        {
            ns = 0;
        }

        var ms = ns / 1_000_000;
        return string.Create(CultureInfo.InvariantCulture,
            $"{ms / 3_600_000:00}:{ms / 60_000 % 60:00}:{ms / 1000 % 60:00}.{ms % 1000:000}");
    }
}

public enum TimeSpecKind
{
    Start,
    End,
    /// <summary>Value is an event sequence number.</summary>
    Seq,
    /// <summary>Value is nanoseconds since the session started.</summary>
    SinceStart,
    /// <summary>Value is nanoseconds since the Unix epoch.</summary>
    Wall,
}
