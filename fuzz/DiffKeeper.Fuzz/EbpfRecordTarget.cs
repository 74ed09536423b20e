using System.Buffers.Binary;
using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Ebpf;

namespace DiffKeeper.Fuzz;

/// <summary>
/// The eBPF ring buffer record decoder, fed a sequence of records as the reader thread is (state carries from
/// one record to the next: open files, renames, links). Input: records, each as a u16 length and its bytes.
/// What the reader thread turns into a loss (<see cref="EbpfSource.IsUndecodable"/>) is the clean rejection.
/// </summary>
public sealed class EbpfRecordTarget : FuzzTarget
{
    private static readonly string[] Roots = ["/w", "/"];

    public static byte[] Frame(IReadOnlyList<byte[]> records)
    {
        var input = new byte[records.Sum(r => 2 + Math.Min(r.Length, ushort.MaxValue))];
        var pos = 0;
        foreach (var r in records)
        {
            var n = Math.Min(r.Length, ushort.MaxValue);
            BinaryPrimitives.WriteUInt16LittleEndian(input.AsSpan(pos), (ushort)n);
            r.AsSpan(0, n).CopyTo(input.AsSpan(pos + 2));
            pos += 2 + n;
        }

        return input;
    }

    protected override void Fuzz(ReadOnlySpan<byte> input)
    {
        // A fresh source per input: its state is per recording. The first root catches relative names.
        var roots = input.Length > 0 && (input[^1] & 1) == 1 ? Roots[..1] : Roots;
        var source = new EbpfSource(roots, new PathFilter(roots, "/trace", []));
        var events = Channel.CreateUnbounded<CaptureEvent>();
        var pos = 0;
        while (pos + 2 <= input.Length)
        {
            var n = Math.Min(BinaryPrimitives.ReadUInt16LittleEndian(input[pos..]), input.Length - pos - 2);
            try
            {
                source.Decode(input.Slice(pos + 2, n), events.Writer);
            }
            catch (Exception e) when (EbpfSource.IsUndecodable(e))
            {
            }

            pos += 2 + n;
        }

        while (events.Reader.TryRead(out _))
        {
        }
    }
}
