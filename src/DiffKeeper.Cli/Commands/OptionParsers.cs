using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using DiffKeeper.Core;

namespace DiffKeeper.Cli.Commands;

/// <summary>
/// Parsers for typed option values. System.CommandLine's own conversion error names the .NET type
/// (<c>System.Nullable`1[System.Int64]</c>); these say what the option expects in words and quote what was given:
/// <c>--session expects a session number, got 'abc'</c>. A parse error exits 2 before any command runs.
/// </summary>
internal static class OptionParsers
{
    /// <summary>An integer option; <paramref name="expects"/> says what it is ("a number of paths").</summary>
    public static Option<int> Expecting(this Option<int> option, string expects, Func<int, bool>? allowed = null)
    {
        option.CustomParser = r => TryInteger(r, option.Name, expects, allowed, out var value) ? (int)value : default;
        return option;
    }

    public static Option<int?> Expecting(this Option<int?> option, string expects, Func<int, bool>? allowed = null)
    {
        option.CustomParser = r => TryInteger(r, option.Name, expects, allowed, out var value) ? (int)value : null;
        return option;
    }

    public static Option<long?> Expecting(this Option<long?> option, string expects)
    {
        option.CustomParser = r =>
            long.TryParse(Single(r), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value) ? value : Fail<long?>(r, option.Name, expects);
        return option;
    }

    /// <summary>A fraction from 0 to 1, written with a dot (0.9) whatever the locale.</summary>
    public static Option<double> ExpectingFraction(this Option<double> option)
    {
        option.CustomParser = r =>
            double.TryParse(Single(r), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value) && value is >= 0 and <= 1
                ? value
                : Fail<double>(r, option.Name, "a fraction from 0 to 1 (for example 0.9)");
        return option;
    }

    /// <summary>A finite number of at least <paramref name="minimum"/>, written with a dot (2.5) whatever the locale.</summary>
    public static Option<double> ExpectingAtLeast(this Option<double> option, double minimum, string expects)
    {
        option.CustomParser = r =>
            double.TryParse(Single(r), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value) && double.IsFinite(value) && value >= minimum
                ? value
                : Fail<double>(r, option.Name, expects);
        return option;
    }

    /// <summary>A moment of a session (<see cref="TimeSpec"/>).</summary>
    public static Option<TimeSpec?> ExpectingTime(this Option<TimeSpec?> option)
    {
        option.CustomParser = r => TimeSpec.TryParse(Single(r), out var spec)
            ? spec
            : Fail<TimeSpec?>(r, option.Name, "a moment: a duration since start (1.5s, 2m14s, 250ms), an RFC 3339 time (2026-11-22T03:30:00.123Z), an event (#1234), 'start' or 'end'");
        return option;
    }

    /// <summary>One of a few words; replaces AcceptOnlyFromAmong, whose error spans several lines.</summary>
    public static Option<string> ExpectingOneOf(this Option<string> option, params string[] words)
    {
        option.CustomParser = r => Single(r) is var text && words.Contains(text, StringComparer.OrdinalIgnoreCase)
            ? text
            : Fail<string>(r, option.Name, "one of " + string.Join(", ", words));
        return option;
    }

    private static bool TryInteger(ArgumentResult r, string name, string expects, Func<int, bool>? allowed, out long value)
    {
        if (int.TryParse(Single(r), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var parsed) && (allowed is null || allowed(parsed)))
        {
            value = parsed;
            return true;
        }

        Fail<int>(r, name, expects);
        value = 0;
        return false;
    }

    // Arity is checked before a custom parser runs, so there is exactly one token here.
    private static string Single(ArgumentResult r) => r.Tokens.Count == 0 ? "" : r.Tokens[^1].Value;

    private static T? Fail<T>(ArgumentResult r, string name, string expects)
    {
        r.AddError($"{name} expects {expects}, got '{Single(r)}'");
        return default;
    }
}
