#!/usr/bin/env python3
"""Measurements of bench/bigfiles.sh (its header says what and how). Prints markdown; writes it to --out too."""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FILES = {"W4": "ckpt.bin", "W5": "mem.img"}
LONG = {"W4": 29, "W5": 31}


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def timed(cmd, **kw):
    os.sync()
    t = time.perf_counter()
    r = run(cmd, **kw)
    return (time.perf_counter() - t) * 1000, r


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def alloc(path):
    return os.stat(path).st_blocks * 512


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def same(a, b):
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def workload(dk, work, w, runs):
    src = os.path.join(work, "workloads", w)
    name = FILES[w]
    versions = [os.path.join(src, f"v{k:02d}", name) for k in range(5)]
    scratch = tempfile.mkdtemp(prefix=f"bigfiles-{w}-", dir=work)
    res = {k: [] for k in ["dk_store", "zstd_store", "cp_store", "dk_rebuild", "zstd_rebuild", "cp_rebuild", "dk_store_v0"]}
    stored = {}
    checks = []
    try:
        for _ in range(runs):
            store = os.path.join(scratch, "store")
            shutil.rmtree(store, ignore_errors=True)
            ids = []
            for k, v in enumerate(versions):
                cmd = [dk, "snapshot", v, "--store", store, "--json"] + (["--parent", str(ids[-1])] if ids else [])
                ms, r = timed(cmd)
                ids.append(json.loads(r.stdout)["id"])
                res["dk_store" if k else "dk_store_v0"].append(ms)
            stored["dk"] = du(store)
            zdir = os.path.join(scratch, "zstd")
            shutil.rmtree(zdir, ignore_errors=True)
            os.makedirs(zdir)
            L = LONG[w]
            run(["zstd", "-3", "-q", "-f", f"--long={L}", versions[0], "-o", f"{zdir}/v00.zst"])
            for k in range(1, 5):
                ms, _ = timed(["zstd", "-3", "-q", "-f", f"--long={L}", f"--patch-from={versions[k - 1]}", versions[k], "-o", f"{zdir}/p{k:02d}"])
                res["zstd_store"].append(ms)
            stored["zstd"] = du(zdir)
            cdir = os.path.join(scratch, "cp")
            for k in range(1, 5):
                shutil.rmtree(cdir, ignore_errors=True)
                os.makedirs(cdir)
                ms, _ = timed(["cp", "--reflink=never", versions[k], cdir])
                res["cp_store"].append(ms)
            # Rebuild the last version.
            out = os.path.join(scratch, "out")
            shutil.rmtree(out, ignore_errors=True)
            ms, _ = timed([dk, "materialize", str(ids[-1]), "--store", store, "--out", out])
            res["dk_rebuild"].append(ms)
            rebuilt = os.path.join(out, name)
            checks.append((same(rebuilt, versions[-1]), alloc(rebuilt), alloc(versions[-1])))
            for k, v in enumerate(versions[:-1]):
                o = os.path.join(scratch, f"out{k}")
                shutil.rmtree(o, ignore_errors=True)
                run([dk, "materialize", str(ids[k]), "--store", store, "--out", o])
                checks.append((same(os.path.join(o, name), v), alloc(os.path.join(o, name)), alloc(v)))
                shutil.rmtree(o)
            os.sync()
            t = time.perf_counter()
            run(["zstd", "-d", "-q", "-f", f"--long={L}", f"{zdir}/v00.zst", "-o", f"{zdir}/r0"])
            for k in range(1, 5):
                run(["zstd", "-d", "-q", "-f", f"--long={L}", f"--patch-from={zdir}/r{k - 1}", f"{zdir}/p{k:02d}", "-o", f"{zdir}/r{k}"])
            res["zstd_rebuild"].append((time.perf_counter() - t) * 1000)
            ms, _ = timed(["cp", "--reflink=never", versions[-1], os.path.join(cdir, "last")])
            res["cp_rebuild"].append(ms)
        return {k: med(v) for k, v in res.items()}, stored, checks, store, ids
    finally:
        pass


def reflink(dk, work, w, store, ids, runs):
    """materialize vN --base vN-1 on a loop-mounted xfs (the store copied there), against a full copy there."""
    name = FILES[w]
    img = os.path.join(work, f"xfs-{w}.img")
    mnt = os.path.join(work, f"xfs-{w}")
    dev = None
    os.makedirs(mnt, exist_ok=True)
    try:
        with open(img, "wb") as f:
            f.truncate(3 << 30)
        dev = run(["losetup", "--find", "--show", img]).stdout.strip()
        run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", dev])
        run(["mount", dev, mnt])
        # The store on the same file system, so the changed blocks are cloned from its packs (aligned groups).
        run(["cp", "-a", store, os.path.join(mnt, "store")])
        store = os.path.join(mnt, "store")
        clone, full, cpf, cpd, shared = [], [], [], [], []
        for _ in range(runs):
            for d in ("a", "b", "c", "d", "e"):
                shutil.rmtree(os.path.join(mnt, d), ignore_errors=True)
            run([dk, "materialize", str(ids[-2]), "--store", store, "--out", os.path.join(mnt, "a")])
            ms, r = timed([dk, "materialize", str(ids[-1]), "--store", store, "--base", os.path.join(mnt, "a"), "--out", os.path.join(mnt, "b")])
            clone.append(ms)
            shared.append("shared" in run(["filefrag", "-v", os.path.join(mnt, "b", name)]).stdout and "copying instead" not in r.stderr)
            ms, _ = timed([dk, "materialize", str(ids[-1]), "--store", store, "--out", os.path.join(mnt, "c")])
            full.append(ms)
            os.makedirs(os.path.join(mnt, "d"))
            ms, _ = timed(["cp", "--reflink=never", os.path.join(mnt, "a", name), os.path.join(mnt, "d", name)])
            cpf.append(ms)
            # materialize fsyncs what it writes before it returns; a full copy compared with it must too.
            os.makedirs(os.path.join(mnt, "e"))
            e = os.path.join(mnt, "e", name)
            os.sync()
            t = time.perf_counter()
            run(["cp", "--reflink=never", os.path.join(mnt, "a", name), e])
            run(["sync", e])
            cpd.append((time.perf_counter() - t) * 1000)
        return med(clone), med(full), med(cpf), med(cpd), all(shared)
    finally:
        subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL)
        if dev:
            subprocess.run(["losetup", "-d", dev])
        os.remove(img) if os.path.exists(img) else None
        shutil.rmtree(mnt, ignore_errors=True)


# The app of the keep-mode rows (and of bench/record-bigfile.py): rewrites PAGES random data pages of PATH per round,
# ROUNDS rounds, PAUSE seconds apart (default 0.4).
APP = r'''
import os, random, sys, time
path, pages, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.4
r = random.Random(5)
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
data = []
off = 0
while True:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    data.extend(range(d // 4096, h // 4096))
    off = h
for _ in range(rounds):
    for p in r.sample(data, min(pages, len(data))):
        os.pwrite(fd, os.urandom(4096), p * 4096)
    time.sleep(pause)
os.close(fd)
'''


def keep(dk, work, capture, rounds=8):
    """The app's freeze per cut in keep mode: a 1 GiB sparse file (64 MiB data) vs a 1 MiB file, 164 pages per cut."""
    out = {}
    app = os.path.join(work, "keep_app.py")
    with open(app, "w") as f:
        f.write(APP)
    for label, size, pages in (("1 GiB sparse", 1 << 30, 16384), ("1 MiB", 1 << 20, 256)):
        d = tempfile.mkdtemp(prefix="keep-", dir=work)
        state, store = os.path.join(d, "state"), os.path.join(d, "store")
        os.makedirs(state)
        path = os.path.join(state, "image")
        r = __import__("random").Random(3)
        with open(path, "wb") as f:
            f.truncate(size)
            for p in sorted(r.sample(range(size // 4096), pages)):
                f.seek(p * 4096)
                f.write(os.urandom(4096))
        res = run([dk, "run", "--state-dir", state, "--store", store, "--capture", capture, "--", "python3", app, path, "164", str(rounds)])
        m = re.search(r"(\d+) cuts \((\d+) with the app stopped, (\d+) ms in all\)", res.stderr)
        cuts, frozen, ms = (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)
        out[label] = (cuts, frozen, ms, ms / frozen if frozen else float("nan"), res.stderr.strip().splitlines()[-1])
        shutil.rmtree(d, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    for a in ("--dk", "--work", "--only", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=int, default=1)
    ap.add_argument("--keep-capture", default="inotify,ebpf")
    ap.add_argument("--reflink", type=int, default=1)
    a = ap.parse_args()
    lines = [f"# bench/bigfiles.sh, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", "",
             f"Command: `bench/bigfiles.sh --only {a.only} --runs {a.runs}`; load before: `{run(['uptime']).stdout.strip()}`", ""]
    lines += ["| workload | store vk ms: diffkeeper | zstd --patch-from | cp (SEEK_DATA) | dk ÷ zstd | dk ÷ cp | stored MiB: dk | zstd | dk ÷ zstd | rebuild last ms: dk | zstd chain | cp | every version rebuilt (cmp, allocated dk/src) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    extra = []
    for w in [w for w in a.only.split(",") if w and w != "none"]:
        m, stored, checks, store, ids = workload(a.dk, a.work, w, a.runs)
        ok = all(c[0] for c in checks)
        ratio = max(c[1] / c[2] for c in checks) if checks else 0
        lines.append(f"| {w} | {m['dk_store']:,.0f} | {m['zstd_store']:,.0f} | {m['cp_store']:,.0f} | {m['dk_store'] / m['zstd_store']:.3f} | "
                     f"{m['dk_store'] / m['cp_store']:.2f} | {stored['dk'] / 2**20:,.1f} | {stored['zstd'] / 2**20:,.1f} | {stored['dk'] / stored['zstd']:.3f} | "
                     f"{m['dk_rebuild']:,.0f} | {m['zstd_rebuild']:,.0f} | {m['cp_rebuild']:,.0f} | {'yes' if ok else 'NO'}, max {ratio:.3f} |")
        extra.append(f"- {w}: diffkeeper stores v0 in {m['dk_store_v0']:,.0f} ms.")
        if a.reflink:
            try:
                clone, full, cpf, cpd, shared = reflink(a.dk, a.work, w, store, ids, a.runs)
                extra.append(f"- {w} on a loop-mounted xfs (reflink=1): materialize v4 beside v3 {clone:,.0f} ms, from the store without a base "
                             f"{full:,.0f} ms, `cp --reflink=never` of v3 {cpf:,.0f} ms (then `sync FILE` too, durable as materialize's output: "
                             f"{cpd:,.0f} ms): clone ÷ full copy {clone / cpf:.3f}, ÷ durable full copy {clone / cpd:.3f}; extents shared: {shared}.")
            except (subprocess.CalledProcessError, OSError) as e:
                extra.append(f"- {w} reflink: skipped ({e})")
        shutil.rmtree(os.path.dirname(store), ignore_errors=True)
    lines += [""] + extra
    if a.keep:
        lines += ["", "| keep mode, 164 pages rewritten per cut | capture | cuts | with the app stopped | freeze ms in all | freeze per cut ms |",
                  "|---|---|---:|---:|---:|---:|"]
        ratios = []
        for capture in a.keep_capture.split(","):
            k = keep(a.dk, a.work, capture)
            for label, (cuts, frozen, ms, per, summary) in k.items():
                lines.append(f"| {label} | {capture} | {cuts} | {frozen} | {ms} | {per:.1f} |")
                extra_summary = re.search(r"\((\d+) of big files from their written blocks alone\)", summary)
                if extra_summary:
                    lines.append(f"| ({label}: {extra_summary.group(1)} versions from the written blocks alone) | | | | | |")
            vals = list(k.values())
            if vals[1][3] == vals[1][3] and vals[1][3] > 0:
                ratios.append(f"freeze per cut, 1 GiB sparse ÷ 1 MiB, {capture}: {vals[0][3] / vals[1][3]:.2f}")
        lines += [""] + ratios
    lines += ["", f"Load after: `{run(['uptime']).stdout.strip()}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
