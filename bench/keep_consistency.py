"""Measures whether a kept state is one the app really had.

A writer updates two 64 KiB files in place, a.bin then b.bin, each filled with one number, as fast as it can:
in every real state, each file holds one number throughout (else the read was torn) and a == b or a == b + 1.
Each trial runs the writer under diffkeeper (`run`, or `record` for comparison), SIGKILLs the whole process group
at a random moment, rebuilds the state (`restore`, or `export --time end`) and checks it.
Usage: python3 bench/keep_consistency.py DIFFKEEPER TRIALS
"""
import os, random, shutil, signal, subprocess, sys, tempfile, time

WRITER = r'''
import os, sys
d = sys.argv[1]
fa = os.open(os.path.join(d, "a.bin"), os.O_RDWR | os.O_CREAT, 0o644)
fb = os.open(os.path.join(d, "b.bin"), os.O_RDWR | os.O_CREAT, 0o644)
i = 0
while True:
    i += 1
    block = (b"%012d\n" % i) * 5041          # 65,533 bytes: one number, repeated
    os.pwrite(fa, block, 0)
    os.pwrite(fb, block, 0)
'''

def numbers(path):
    data = open(path, "rb").read()
    return {int(x) for x in data.split(b"\n") if x}

def check(state):
    a, b = os.path.join(state, "a.bin"), os.path.join(state, "b.bin")
    if not (os.path.exists(a) and os.path.exists(b)):
        return "ok (nothing yet)"
    na, nb = numbers(a), numbers(b)
    if len(na) != 1 or len(nb) != 1:
        return f"torn: a holds {sorted(na)[:3]}, b holds {sorted(nb)[:3]}"
    (x,), (y,) = na, nb
    return "ok" if x in (y, y + 1) else f"mixed moments: a={x} b={y}"

def trial(dk, mode, rng, work):
    state, store, out = (os.path.join(work, n) for n in ("data", "store", "out"))
    for p in (state, store, out):
        shutil.rmtree(p, ignore_errors=True)
    os.makedirs(state)
    writer = os.path.join(work, "writer.py")
    if mode == "run":
        cmd = [dk, "run", "--state-dir", state, "--store", store, "--metrics-addr", "none", "--", sys.executable, writer, state]
    else:
        cmd = [dk, "record", "-q", "--trace", store, "--watch", state, "--", sys.executable, writer, state]
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.8 + rng.random() * 0.8)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.2)
    if mode == "run":
        rebuilt = subprocess.run([dk, "restore", "--state-dir", out, "--store", store], stderr=subprocess.DEVNULL)
    else:
        rebuilt = subprocess.run([dk, "export", "--trace", store, "--time", "end", "--out", out], stderr=subprocess.DEVNULL)
    return check(out) if rebuilt.returncode == 0 else "skipped (killed before anything was stored)"

def main():
    dk, trials = sys.argv[1], int(sys.argv[2])
    rng = random.Random(11)
    work = tempfile.mkdtemp(prefix="dk-consistency-")
    open(os.path.join(work, "writer.py"), "w").write(WRITER)
    for mode in ("record", "run"):
        results = [trial(dk, mode, rng, work) for _ in range(trials)]
        done = [r for r in results if not r.startswith("skipped")]
        bad = [r for r in done if not r.startswith("ok")]
        print(f"{mode}: {len(done)} kills with a state to check, {len(done) - len(bad)} consistent, {len(bad)} not"
              + (f" (e.g. {bad[0]})" if bad else ""), flush=True)
    shutil.rmtree(work, ignore_errors=True)

main()
