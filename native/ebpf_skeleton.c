// Loads bpf/diffkeeper.bpf.c through libbpf's light skeleton: a loader BPF program, generated at build time by
// `bpftool gen skeleton -L` (bpf/build.sh writes diffkeeper.lskel.h beside the object), creates the maps, and the
// kernel does the CO-RE relocations and the BTF id lookups (the tp_btf attach targets, the bpf_rdonly_cast kfunc)
// against the BTF it already holds. libbpf's own loader parses the kernel's whole BTF in user space at every load
// instead (5.4 MB here, ~30-35 ms plus its page faults; docs/benchmarks.md, branch ebpfls).
//
// Nothing here links libbpf: the skeleton makes bpf(2) calls itself. Without the generated header (bpftool or
// clang missing at build time) every call fails with ENOSYS and EbpfSource uses libbpf's loader.
// Linked statically into the NativeAOT executable; a shared library beside JIT-run outputs (tests).

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>

#if __has_include("diffkeeper.lskel.h")
#include "diffkeeper.lskel.h"

// The stage that failed, for the one line EbpfSource prints under --verbose.
#define DK_STAGE_OPEN 0
#define DK_STAGE_LOAD 1
#define DK_STAGE_ATTACH 2

// Runs the loader program with the two sizes only known at run time (0 keeps the object's own). Returns 0 and the
// skeleton (the caller owns it: dk_ebpf_destroy), or a negative errno and the stage that failed (nothing is left
// loaded then).
int dk_ebpf_load(uint32_t ring_bytes, uint32_t scratch_entries, struct diffkeeper **out, int *stage)
{
    *out = NULL;
    *stage = DK_STAGE_OPEN;
    struct diffkeeper *skel = diffkeeper__open();
    if (!skel)
        return -ENOMEM;
    // The loader reads a map's max_entries from here when it is not 0 (libbpf's gen_loader).
    skel->maps.events.max_entries = ring_bytes;
    skel->maps.scratch.max_entries = scratch_entries;
    *stage = DK_STAGE_LOAD;
    errno = 0;
    int err = diffkeeper__load(skel);
    if (err) {
        diffkeeper__destroy(skel);
        return err < 0 ? err : -(errno ? errno : EINVAL);
    }
    *out = skel;
    return 0;
}

// The descriptor of a map of the loaded object, or -1 when the object has none of that name. The skeleton keeps it.
int dk_ebpf_map_fd(struct diffkeeper *skel, const char *name)
{
#define DK_MAP(m) if (strcmp(name, #m) == 0) return skel->maps.m.map_fd
    DK_MAP(events);
    DK_MAP(tracked);
    DK_MAP(announced);
    DK_MAP(drops);
    DK_MAP(unseen);
    DK_MAP(settings);
    DK_MAP(scratch);
#undef DK_MAP
    return -1;
}

// Attaches the programs (tp_btf: raw tracepoint links). Returns 0, or a negative errno and the index of the
// program that failed (0 dk_fork, 1 dk_exit, 2 dk_sys_exit); the ones attached before it stay until dk_ebpf_destroy.
int dk_ebpf_attach(struct diffkeeper *skel, int *failed)
{
    int (*attach[])(struct diffkeeper *) = {
        diffkeeper__dk_fork__attach, diffkeeper__dk_exit__attach, diffkeeper__dk_sys_exit__attach,
    };
    for (int i = 0; i < (int)(sizeof(attach) / sizeof(attach[0])); i++) {
        *failed = i;
        errno = 0;
        if (attach[i](skel) < 0)
            return -(errno ? errno : EINVAL);
    }
    *failed = -1;
    return 0;
}

// Detaches the programs, closes every map and program descriptor (the kernel frees them with the last reference:
// a ring buffer mapped by a consumer stays until it is unmapped) and frees the skeleton.
void dk_ebpf_destroy(struct diffkeeper *skel)
{
    diffkeeper__destroy(skel);
}

#else

struct diffkeeper;

int dk_ebpf_load(uint32_t ring_bytes, uint32_t scratch_entries, struct diffkeeper **out, int *stage)
{
    (void)ring_bytes;
    (void)scratch_entries;
    *out = NULL;
    *stage = 0;
    return -ENOSYS;
}

int dk_ebpf_map_fd(struct diffkeeper *skel, const char *name)
{
    (void)skel;
    (void)name;
    return -1;
}

int dk_ebpf_attach(struct diffkeeper *skel, int *failed)
{
    (void)skel;
    *failed = 0;
    return -ENOSYS;
}

void dk_ebpf_destroy(struct diffkeeper *skel)
{
    (void)skel;
}

#endif
