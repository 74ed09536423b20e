using System.CommandLine;
using System.CommandLine.Parsing;

namespace DiffKeeper.Cli;

/// <summary>
/// The one line a bad command line prints. System.CommandLine's own messages are rebuilt from the parse result in
/// our words (an unknown command lists the commands, a missing value names the option and its form); only an
/// error of a kind not handled here keeps its text, which is an English sentence since the CLI no longer strips
/// resource strings.
/// </summary>
internal static class UsageError
{
    public static string Describe(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        var isRoot = !command.Parents.Any();
        var sentences = new List<string>();
        foreach (var token in parse.UnmatchedTokens)
        {
            sentences.Add(isRoot && !token.StartsWith('-')
                ? $"unknown command '{token}'; the commands are {string.Join(", ", command.Subcommands.Select(c => c.Name))}"
                : token.StartsWith('-') ? $"unknown option '{token}'" : $"unexpected argument '{token}'");
        }

        foreach (var error in parse.Errors)
        {
            // Unmatched tokens were described above, from the list rather than from each error's text.
            if (error.SymbolResult is CommandResult && parse.UnmatchedTokens.Any(t => error.Message.Contains($"'{t}'", StringComparison.Ordinal)))
            {
                continue;
            }

            sentences.Add(Sentence(error, parse, command, isRoot));
        }

        var name = isRoot ? "diffkeeper" : "diffkeeper " + command.Name;
        return $"{string.Join("; ", sentences.Where(s => s.Length > 0).Distinct())} (see '{name} --help')";
    }

    private static string Sentence(ParseError error, ParseResult parse, Command command, bool isRoot)
    {
        switch (error.SymbolResult)
        {
            case OptionResult { Tokens.Count: 0, IdentifierToken: null } o: // a required option not given at all
                return $"{command.Name} needs {o.Option.Name} {o.Option.HelpName ?? "VALUE"}";
            case OptionResult { Tokens.Count: 0 } o:
                return $"{o.Option.Name} needs a value: {o.Option.Name} {o.Option.HelpName ?? "VALUE"}";
            case OptionResult o when o.Tokens.Count > 1 && o.Option.Arity.MaximumNumberOfValues == 1:
                return $"{o.Option.Name} was given {o.Tokens.Count} times ({string.Join(", ", o.Tokens.Select(t => $"'{t.Value}'"))}); give it once";
            case ArgumentResult { Parent: OptionResult o } a when a.Tokens.Count > 1:
                return $"{o.Option.Name} was given {a.Tokens.Count} times; give it once";
            case ArgumentResult { Tokens.Count: 0 } a:
                return Missing(a.Argument, command);
            case CommandResult when isRoot:
                // An unknown command word also makes "no command"; the unknown word alone says what happened.
                return parse.UnmatchedTokens.Any(t => !t.StartsWith('-'))
                    ? ""
                    : $"no command given; the commands are {string.Join(", ", command.Subcommands.Select(c => c.Name))}";
            case CommandResult:
                foreach (var option in command.Options.Where(o => o.Required && parse.GetResult(o) is null))
                {
                    if (error.Message.Contains($"'{option.Name}'", StringComparison.Ordinal))
                    {
                        return $"{command.Name} needs {option.Name} {option.HelpName ?? "VALUE"}";
                    }
                }

                foreach (var argument in command.Arguments.Where(a => a.Arity.MinimumNumberOfValues > 0 && (parse.GetResult(a)?.Tokens.Count ?? 0) == 0))
                {
                    return Missing(argument, command);
                }

                break;
        }

        return error.Message.TrimEnd('.');
    }

    private static string Missing(Argument argument, Command command) =>
        argument.Name is "command" or "app"
            ? $"{command.Name} needs the {argument.Name} to run after '--': diffkeeper {command.Name} [OPTIONS] -- {argument.Name.ToUpperInvariant()} [ARGS]"
            : $"{command.Name} needs a {argument.Name}: diffkeeper {command.Name} [OPTIONS] {argument.Name.ToUpperInvariant()}";
}
