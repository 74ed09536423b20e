using System.Runtime.CompilerServices;
using DiffKeeper.Capture.Ebpf;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The eBPF reader's payload slabs (<see cref="PayloadSlabs"/>): a payload keeps its bytes for as long as it is
/// reachable, however many payloads are cut after it; a slab none of whose payloads is reachable any more is given
/// back by its finalizer and cut from again (so an untar's payloads reuse memory instead of faulting in new pages).
/// </summary>
public sealed class PayloadSlabsTests
{
    [Fact]
    public void A_reachable_payload_keeps_its_bytes_while_many_slabs_are_cut_and_collected()
    {
        using var slabs = new PayloadSlabs();
        var kept = new List<(ReadOnlyMemory<byte> Payload, byte[] Truth)>();
        var random = new Random(11);
        for (var i = 0; i < 2_000; i++)
        {
            var truth = new byte[random.Next(1, 40_000)];
            random.NextBytes(truth);
            var payload = slabs.Copy(truth)!.Value;
            if (i % 97 == 0)
            {
                kept.Add((payload, truth)); // the rest become garbage at once
            }

            if (i % 250 == 0)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
        }

        GC.Collect();
        GC.WaitForPendingFinalizers();
        foreach (var (payload, truth) in kept)
        {
            Assert.True(payload.Span.SequenceEqual(truth));
        }
    }

    [Fact]
    public void A_slab_whose_payloads_are_all_unreachable_is_cut_from_again()
    {
        using var slabs = new PayloadSlabs();
        var first = SlabsCutFrom(slabs, 9); // the first slab full, the second begun
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var next = SlabsCutFrom(slabs, 9); // the second slab full: the next one is the first again
        Assert.Equal(2, first.Count);
        Assert.Contains(first[0], next);
        Assert.Equal(2, slabs.Mapped); // used again, not unmapped and mapped anew (which may give the same address)
    }

    // Cuts payloads of an eighth of a slab and returns the slabs (2 MiB aligned) they were cut from; the payloads are
    // unreachable once it returns.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe List<nint> SlabsCutFrom(PayloadSlabs slabs, int payloads)
    {
        var chunk = new byte[PayloadSlabs.SlabSize / 8];
        var seen = new List<nint>();
        for (var i = 0; i < payloads; i++)
        {
            var payload = slabs.Copy(chunk)!.Value;
            using var pin = payload.Pin();
            var slab = (nint)pin.Pointer & ~(nint)(PayloadSlabs.SlabSize - 1);
            if (!seen.Contains(slab))
            {
                seen.Add(slab);
            }
        }

        return seen;
    }
}
