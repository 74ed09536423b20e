#!/usr/bin/env bash
# Compiles bpf/diffkeeper.bpf.c to a CO-RE object, and its light skeleton: bpf/build.sh OUT_DIR
# vmlinux.h is generated from the running kernel's BTF (/sys/kernel/btf/vmlinux); CO-RE relocations let the
# object load on other kernels with BTF. None of vmlinux.h, the object and the skeleton is committed. Called by the
# Native project's build (target CompileBpf: native/ebpf_skeleton.c includes the skeleton, the Capture project embeds
# the object); scripts/deps.sh installs clang, bpftool and libbpf-dev when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: bpf/build.sh OUT_DIR}"
mkdir -p "$out"
btf=/sys/kernel/btf/vmlinux
# Without what the object needs, diffkeeper is built without it: the eBPF backend then says so and `auto`
# falls back to the next backend. A compile error in the program itself still fails the build.
skip() { echo "bpf/build.sh: warning: $1; building without the eBPF backend" >&2; rm -f "$out/diffkeeper.bpf.o" "$out/diffkeeper.lskel.h"; exit 0; }
for tool in clang bpftool; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is missing (./build.sh installs it from apt)"
done
[ -r "$btf" ] || skip "$btf is missing (this kernel has no BTF)"
[ -f /usr/include/bpf/bpf_helpers.h ] || skip "the libbpf-dev headers are missing"
if [ ! -s "$out/vmlinux.h" ] || [ "$btf" -nt "$out/vmlinux.h" ]; then
  bpftool btf dump file "$btf" format c > "$out/vmlinux.h.tmp"
  mv "$out/vmlinux.h.tmp" "$out/vmlinux.h"
fi
arch=$(uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')
clang -g -O2 -target bpf -D__TARGET_ARCH_"$arch" -Wall -Werror -I "$out" -c "$here/diffkeeper.bpf.c" -o "$out/diffkeeper.bpf.o.full"
# -g is for BTF; the DWARF sections that come with it (~90% of the object) are never read. bpftool's linker keeps
# BTF and BTF.ext (line info included) and drops DWARF: the object embedded in diffkeeper and copied at every
# start shrinks from ~720 KB to ~75 KB.
bpftool gen object "$out/diffkeeper.bpf.o.tmp" "$out/diffkeeper.bpf.o.full"
rm -f "$out/diffkeeper.bpf.o.full"
mv "$out/diffkeeper.bpf.o.tmp" "$out/diffkeeper.bpf.o"
# The light skeleton (diffkeeper.lskel.h): the object and a loader program that creates its maps and loads its
# programs, with the CO-RE relocations and BTF ids resolved by the kernel, so the start never parses the kernel's BTF
# in user space. A bpftool without `gen skeleton -L` leaves only the object: diffkeeper then loads it with libbpf.
if bpftool gen skeleton -L "$out/diffkeeper.bpf.o" name diffkeeper > "$out/diffkeeper.lskel.h.tmp" 2> "$out/lskel.err"; then
  mv "$out/diffkeeper.lskel.h.tmp" "$out/diffkeeper.lskel.h"
else
  echo "bpf/build.sh: warning: bpftool cannot make a light skeleton ($(head -c 300 "$out/lskel.err")); diffkeeper will load the eBPF object with libbpf" >&2
  rm -f "$out/diffkeeper.lskel.h.tmp" "$out/diffkeeper.lskel.h"
fi
rm -f "$out/lskel.err"
