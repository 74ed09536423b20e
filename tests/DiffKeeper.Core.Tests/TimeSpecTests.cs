using DiffKeeper.Core;

namespace DiffKeeper.Core.Tests;

public sealed class TimeSpecTests
{
    [Theory]
    [InlineData("1.5s", 1_500_000_000L)]
    [InlineData("2m14s", 134_000_000_000L)]
    [InlineData("1h2m3.25s", 3_723_250_000_000L)]
    [InlineData("250ms", 250_000_000L)]
    [InlineData("90us", 90_000L)]
    [InlineData("7ns", 7L)]
    [InlineData("3", 3_000_000_000L)]
    [InlineData("0.000000001s", 1L)]
    public void Durations_are_nanoseconds_since_start(string text, long ns)
    {
        var spec = TimeSpec.Parse(text);
        Assert.Equal(TimeSpecKind.SinceStart, spec.Kind);
        Assert.Equal(ns, spec.Value);
    }

    [Fact]
    public void Rfc3339_keeps_nanoseconds()
    {
        var spec = TimeSpec.Parse("2026-11-22T03:30:00.123456789Z");
        Assert.Equal(TimeSpecKind.Wall, spec.Kind);
        var expected = (new DateTimeOffset(2026, 11, 22, 3, 30, 0, TimeSpan.Zero).UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) * 100 + 123_456_789;
        Assert.Equal(expected, spec.Value);
    }

    [Fact]
    public void Rfc3339_with_offset_is_converted_to_utc()
    {
        var a = TimeSpec.Parse("2026-11-22T04:30:00.5+01:00");
        var b = TimeSpec.Parse("2026-11-22T03:30:00.5Z");
        Assert.Equal(b.Value, a.Value);
    }

    [Theory]
    [InlineData("#1234", TimeSpecKind.Seq, 1234L)]
    [InlineData("start", TimeSpecKind.Start, 0L)]
    [InlineData("END", TimeSpecKind.End, 0L)]
    public void Events_and_ends(string text, TimeSpecKind kind, long value)
    {
        var spec = TimeSpec.Parse(text);
        Assert.Equal(kind, spec.Kind);
        Assert.Equal(value, spec.Value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("soon")]
    [InlineData("#")]
    [InlineData("#-1")]
    [InlineData("1x")]
    [InlineData("s")]
    [InlineData("1.5.2s")]
    public void Bad_times_are_one_usage_error(string text)
    {
        var e = Assert.Throws<DiffKeeperException>(() => TimeSpec.Parse(text));
        Assert.Equal(ExitCode.Usage, e.Code);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData(0L, "00:00:00.000")]
    [InlineData(1_234_567_890L, "00:00:01.234")]
    [InlineData(134_123_000_000L, "00:02:14.123")]
    [InlineData(3_723_250_000_000L, "01:02:03.250")]
    public void Durations_format_with_milliseconds(long ns, string text) =>
        Assert.Equal(text, TimeSpec.FormatDuration(ns));
}
