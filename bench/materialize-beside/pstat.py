#!/usr/bin/env python3
"""pstat.py MNT ROUNDS ID name=BIN...: alternating `perf stat` of `materialize ID --base MNT/base` per binary (ID
`version`: --version), rm + sync of the output before each, untimed: medians (min) of task-clock ms, page faults
(traps only, unlike matbench.py's minflt), context switches, wall ms (perf's start included). BIN may end in
?VAR=value&VAR2=value to run it with those environment variables."""
import os, sys, subprocess, statistics, shutil, time
mnt, rounds, vid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bins = [a.split('=', 1) for a in sys.argv[4:]]
res = {n: [] for n, _ in bins}
for r in range(rounds):
    for n, b in bins:
        out = f"{mnt}/out-{n}"; shutil.rmtree(out, ignore_errors=True); os.sync()
        argv = [b, '--version'] if vid == 'version' else [b, 'materialize', vid, '--store', f'{mnt}/store', '--base', f'{mnt}/base', '--out', out]
        t = time.perf_counter()
        env = dict(os.environ)
        if '?' in b:
            b, kv = b.split('?', 1); env.update(x.split('=', 1) for x in kv.split('&'))
            argv[0] = b
        p = subprocess.run(['perf', 'stat', '-x,', '-e', 'task-clock,page-faults,context-switches,cpu-migrations'] + argv, capture_output=True, text=True, env=env)
        w = (time.perf_counter() - t) * 1000
        if p.returncode: sys.exit(p.stderr)
        v = {}
        for line in p.stderr.splitlines():
            f = line.split(',')
            if len(f) > 3 and f[2] in ('task-clock', 'page-faults', 'context-switches', 'cpu-migrations'): v[f[2]] = float(f[0])
        res[n].append((v['task-clock'], v['page-faults'], v['context-switches'], w))
med = statistics.median
for n, xs in res.items():
    print(f"{n:8} task-clock {med([x[0] for x in xs]):6.1f} ({min(x[0] for x in xs):5.1f}) ms  faults {med([x[1] for x in xs]):5.0f}  cs {med([x[2] for x in xs]):4.0f}  wall {med([x[3] for x in xs]):6.1f} ({min(x[3] for x in xs):5.1f}) ms")
