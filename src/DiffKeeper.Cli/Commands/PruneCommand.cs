using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Cli.Commands;

internal static class PruneCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var keepLast = new Option<int?>("--keep-last") { Description = "Keep the last N versions of each path", HelpName = "N" }
            .Expecting("a number of versions (1 or more: the newest version of a path is always kept)", n => n >= 1);
        var keepWithin = new Option<string?>("--keep-within")
        {
            Description = "Keep the versions recorded within this long before now (7d, 24h, 90m); with --keep-last, a version either keeps is kept",
            HelpName = "DURATION",
        };
        var path = new Option<string?>("--path") { Description = "Only prune paths matching this glob (relative or absolute)", HelpName = "GLOB" };
        var session = CommonOptions.Session();
        session.Description = "Only prune versions recorded in this session";
        var noGc = new Option<bool>("--no-gc") { Description = "Skip compaction and repacking; a later 'diffkeeper gc' frees the bytes" };
        var options = new MaintenanceOptionsBinder();
        var cmd = new Command("prune", """
            Drop the content of older file versions, then collect garbage (see 'diffkeeper gc --help').
            The newest version of every path is always kept. A pruned moment can no longer be exported or shown
            ('log' marks pruned versions); the timeline keeps every event.
            """)
        {
            trace, keepLast, keepWithin, path, session, noGc,
        };
        foreach (var o in options.All)
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(pr =>
        {
            long? within = null;
            if (pr.GetValue(keepWithin) is { } text)
            {
                within = TimeSpec.TryParseDuration(text, out var ns)
                    ? ns
                    : throw new DiffKeeperException(ExitCode.Usage, $"--keep-within takes a duration such as 7d, 24h or 90m, not '{text}'");
            }

            var last = pr.GetValue(keepLast);
            if (last is null && within is null)
            {
                throw new DiffKeeperException(ExitCode.Usage, "prune needs --keep-last N, --keep-within DURATION, or both");
            }

            var policy = new PrunePolicy(last, within, pr.GetValue(path) is { } g ? new Glob(g) : null, pr.GetValue(session));
            var maintenance = options.Bind(pr, policy);
            return GcCommand.Run(console, pr.GetValue(trace)!, pr.GetValue(noGc)
                ? maintenance with { Delta = null, RepackThreshold = 0 }
                : maintenance, pr.GetValue(options.Json));
        });
        return cmd;
    }
}
