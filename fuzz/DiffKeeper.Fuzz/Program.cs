using DiffKeeper.Fuzz;

// Usage (fuzz/run.sh drives it):
//   DiffKeeper.Fuzz TARGET BASE          run under afl-fuzz (input on stdin when started without it)
//   DiffKeeper.Fuzz replay TARGET BASE FILE...   run inputs once each, print what each one did
//   DiffKeeper.Fuzz seed BASE CORPUS BSDIFF      write the seed corpora from the base trace, its bsdiff twin and a live eBPF recording
// BASE is fuzz/corpus/base: the small recorded trace the catalog and pack targets complete their input with.
if (args.Length >= 4 && args[0] == "seed")
{
    Replay.GiveCoverageMap();
    SeedWriter.Write(args[1], args[2], args[3]);
    return 0;
}

if (args.Length >= 4 && args[0] == "replay")
{
    return Replay.Run(FuzzTarget.Named(args[1], args[2]), args[3..]);
}

if (args.Length == 2)
{
    var target = FuzzTarget.Named(args[0], args[1]);
    // Persistent mode: one process runs input after input; an exception that escapes is afl-fuzz's crash.
    SharpFuzz.Fuzzer.Run(stream =>
    {
        using var bytes = new MemoryStream();
        stream.CopyTo(bytes);
        target.Run(bytes.GetBuffer().AsSpan(0, (int)bytes.Length));
    });
    return 0;
}

await Console.Error.WriteLineAsync($"usage: DiffKeeper.Fuzz {{{string.Join('|', FuzzTarget.Names)}}} BASE | replay TARGET BASE FILE... | seed BASE CORPUS BSDIFF");
return 2;
