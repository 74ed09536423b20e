#!/usr/bin/env python3
"""matbench.py MNT ROUNDS ID name=BIN ... [--cp] (MNT prepared by mkstores.sh; ID 5 = v04 beside v03, 4 = nothing to clone,
`version` = --version): alternating `materialize ID --base MNT/base --out MNT/out-name`
of each binary (rm + sync before each, untimed) and optionally the durable copy
`cp --reflink=never base/ckpt.bin out/ckpt.bin && sync out/ckpt.bin`. Wall from perf_counter; CPU and minor
faults from wait4's rusage (which counts pages populated by madvise too: `perf stat -e page-faults`
counts only the traps). Prints medians (min)."""
import os, sys, time, subprocess, statistics, shutil
mnt, rounds, vid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bins = [a.split('=', 1) for a in sys.argv[4:] if '=' in a]
with_cp = '--cp' in sys.argv
def run(argv):
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    w = (time.perf_counter() - t) * 1000
    err = p.stderr.read().decode(); p.stderr.close()
    if status != 0: sys.exit(f"{argv} failed: {err}")
    return w, (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_minflt, err
res = {n: [] for n, _ in bins}
if with_cp: res['cp'] = []
last = {}
for r in range(rounds):
    for n, b in bins + ([('cp', None)] if with_cp else []):
        out = f"{mnt}/out-{n}"
        shutil.rmtree(out, ignore_errors=True); os.sync()
        if n == 'cp':
            os.makedirs(out)
            argv = ['sh', '-c', f'cp --reflink=never {mnt}/base/ckpt.bin {out}/ckpt.bin && sync {out}/ckpt.bin']
        elif vid == 'version':
            argv = [b, '--version']
        else:
            argv = [b, 'materialize', vid, '--store', f'{mnt}/store', '--base', f'{mnt}/base', '--out', out]
        w, c, f, err = run(argv)
        res[n].append((w, c, f)); last[n] = err.strip()
med = lambda xs: statistics.median(xs)
for n, xs in res.items():
    print(f"{n:6} wall {med([x[0] for x in xs]):7.1f} ({min(x[0] for x in xs):6.1f})  cpu {med([x[1] for x in xs]):6.1f} ({min(x[1] for x in xs):5.1f})  minflt {med([x[2] for x in xs]):6.0f}  | {last[n][-110:]}")
if with_cp:
    cpm = med([x[0] for x in res['cp']]); cpmin = min(x[0] for x in res['cp'])
    for n, _ in bins:
        print(f"{n}: ratio median {med([x[0] for x in res[n]])/cpm:.3f}  min/min {min(x[0] for x in res[n])/cpmin:.3f}")
