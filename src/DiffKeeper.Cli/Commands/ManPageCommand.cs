using System.CommandLine;
using System.Globalization;
using System.Text;
using DiffKeeper.Cli.Rendering;

namespace DiffKeeper.Cli.Commands;

/// <summary>
/// diffkeeper(1) in roff, written from the command tree (the same descriptions --help prints), so the man page
/// cannot drift from the program. Hidden; ./build.sh runs it to write bin/diffkeeper.1.
/// </summary>
internal static class ManPageCommand
{
    public static Command Create(IConsole console, string description, Func<IReadOnlyList<Command>> commands)
    {
        var cmd = new Command("man-page", "Print diffkeeper(1) in roff (./build.sh writes it to bin/diffkeeper.1).") { Hidden = true };
        cmd.SetAction(_ =>
        {
            console.Out.Write(Render(description, commands()));
            console.Out.Flush();
            return 0;
        });
        return cmd;
    }

    private static string Render(string description, IReadOnlyList<Command> tree)
    {
        var version = typeof(ManPageCommand).Assembly.GetName().Version?.ToString(3) ?? "";
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $".TH DIFFKEEPER 1 \"\" \"diffkeeper {version}\" \"User Commands\"\n");
        sb.Append(".SH NAME\ndiffkeeper \\- a flight recorder and time machine for the files of a process tree\n");
        sb.Append(".SH SYNOPSIS\n.B diffkeeper\n.I command\n[\\fIoptions\\fR]\n.br\n.B diffkeeper record\n[\\fIoptions\\fR] \\-\\- \\fIcommand\\fR [\\fIargs\\fR]\n");
        sb.Append(".SH DESCRIPTION\n").Append(Text(description)).Append('\n');
        sb.Append(".SH COMMANDS\n");
        foreach (var c in tree.Where(c => !c.Hidden))
        {
            sb.Append(".SS ").Append(Escape(c.Name));
            foreach (var a in c.Arguments)
            {
                sb.Append(' ').Append(Escape(a.Name.ToUpperInvariant()));
            }

            sb.Append('\n').Append(Text(c.Description ?? "")).Append('\n');
            foreach (var o in c.Options.Where(o => !o.Hidden))
            {
                sb.Append(".TP\n.B ").Append(Escape(string.Join(", ", new[] { o.Name }.Concat(o.Aliases))));
                if (o.ValueType != typeof(bool))
                {
                    sb.Append(' ').Append("\\fI").Append(Escape(o.HelpName ?? "VALUE")).Append("\\fR");
                }

                sb.Append('\n').Append(Text(o.Description ?? "")).Append('\n');
            }
        }

        sb.Append(".SH ENVIRONMENT\n.TP\n.B DIFFKEEPER_TRACE\nThe trace directory when \\-\\-trace is not given (default ./diffkeeper\\-trace).\n");
        sb.Append(".SH SEE ALSO\nThe README of the project, and docs/store\\-format.md for the trace's format.\n");
        return sb.ToString();
    }

    // One paragraph per blank-line-separated block; lines kept as written (.br), so examples stay on their lines.
    private static string Text(string text) =>
        string.Join("\n.br\n", text.Trim().Split('\n').Select(l => Escape(l.TrimEnd())).Where(l => l.Length > 0));

    private static string Escape(string text)
    {
        var escaped = text.Replace("\\", "\\e", StringComparison.Ordinal).Replace("-", "\\-", StringComparison.Ordinal);
        return escaped.StartsWith('.') || escaped.StartsWith('\'') ? "\\&" + escaped : escaped;
    }
}
