#!/usr/bin/env python3
"""pfclass.py perf.data (from `perf record -e page-faults -c 1 -d`): page faults by the mapping of the faulting address and of the code that faulted."""
import subprocess, sys, re, collections
out = subprocess.run(['perf', 'script', '-i', sys.argv[1], '-F', 'tid,ip,addr', '--show-mmap-events'], capture_output=True, text=True).stdout
maps = []
byaddr = collections.Counter(); byip = collections.Counter(); pair = collections.Counter(); tids = collections.Counter()
mm = re.compile(r'PERF_RECORD_MMAP2? (\d+)/(\d+): \[0x([0-9a-f]+)\(0x([0-9a-f]+)\) @ \S+(?: [^\]]*)?\]: (\S+) (.*)$')
def name(a):
    for s, e, prot, n in reversed(maps):
        if s <= a < e: return f"{n.split('/')[-1] or 'anon'} {prot}"
    return 'unmapped/anon-brk'
for line in out.splitlines():
    m = mm.search(line)
    if m:
        s = int(m.group(3), 16); maps.append((s, s + int(m.group(4), 16), m.group(5), m.group(6).strip())); continue
    f = line.split()
    if len(f) == 3:
        tid, addr, ip = f[0], int(f[1], 16), int(f[2], 16)
        a, i = name(addr), name(ip); byaddr[a] += 1; byip[i] += 1; pair[(a, i)] += 1; tids[tid] += 1
print('by faulting address:'); [print(f'  {n:5} {k}') for k, n in byaddr.most_common(25)]
print('by code:'); [print(f'  {n:5} {k}') for k, n in byip.most_common(15)]
print('threads:', dict(tids))
print('pairs:'); [print(f'  {n:5} {a}  <-  {i}') for (a, i), n in pair.most_common(20)]
