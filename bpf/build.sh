#!/usr/bin/env bash
# Compiles bpf/diffkeeper.bpf.c to a CO-RE object: bpf/build.sh OUT_DIR
# vmlinux.h is generated from the running kernel's BTF (/sys/kernel/btf/vmlinux); CO-RE relocations let the
# object load on other kernels with BTF. Neither vmlinux.h nor the object is committed. Called by the Capture
# project's build (target CompileBpf); scripts/deps.sh installs clang, bpftool and libbpf-dev when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: bpf/build.sh OUT_DIR}"
mkdir -p "$out"
btf=/sys/kernel/btf/vmlinux
for tool in clang bpftool; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bpf/build.sh: $tool is missing (./build.sh installs it from apt)" >&2; exit 1; }
done
[ -r "$btf" ] || { echo "bpf/build.sh: $btf is missing: this kernel has no BTF, the eBPF object cannot be built" >&2; exit 1; }
[ -f /usr/include/bpf/bpf_helpers.h ] || { echo "bpf/build.sh: libbpf-dev headers are missing" >&2; exit 1; }
if [ ! -s "$out/vmlinux.h" ] || [ "$btf" -nt "$out/vmlinux.h" ]; then
  bpftool btf dump file "$btf" format c > "$out/vmlinux.h.tmp"
  mv "$out/vmlinux.h.tmp" "$out/vmlinux.h"
fi
arch=$(uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')
clang -g -O2 -target bpf -D__TARGET_ARCH_"$arch" -Wall -Werror -I "$out" -c "$here/diffkeeper.bpf.c" -o "$out/diffkeeper.bpf.o.tmp"
mv "$out/diffkeeper.bpf.o.tmp" "$out/diffkeeper.bpf.o"
