#!/usr/bin/env python3
"""`record --capture ebpf` of a program rewriting 1% of a 1 GiB sparse file's data pages in rounds, old binary
against new, alternating (docs/benchmarks.md, "bigrec"). Per run: wall time of `record`, diffkeeper's own user and
system CPU and the bytes it read (`/proc/PID/stat` and `/proc/PID/io` of the exited process before it is reaped,
so the recorded program's CPU is not counted), and `big_file_bytes_read` from `--json` when the binary has it.

usage: record-bigfile.py --work DIR --dk OLD --dk NEW [--runs N] [--rounds R] [--pages P]
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bigfiles import APP  # noqa: E402  (the same app as keep mode's rows: PATH PAGES ROUNDS PAUSE)


def make_image(path, size=1 << 30, pages=16384):
    r = random.Random(3)
    with open(path, "wb") as f:
        f.truncate(size)
        for p in sorted(r.sample(range(size // 4096), pages)):
            f.seek(p * 4096)
            f.write(os.urandom(4096))


def one(dk, work, app, pages, rounds):
    d = tempfile.mkdtemp(prefix="rec-", dir=work)
    state, trace = os.path.join(d, "state"), os.path.join(d, "trace")
    os.makedirs(state)
    image = os.path.join(state, "image")
    make_image(image)
    subprocess.run(["sync"], check=True)
    t0 = time.monotonic()
    p = subprocess.Popen([dk, "record", "--trace", trace, "--watch", state, "--capture", "ebpf", "--no-compact", "--json", "--",
                          "python3", app, image, str(pages), str(rounds), "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: its /proc entry still says what it used
    wall = time.monotonic() - t0
    tick = os.sysconf("SC_CLK_TCK")
    stat = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    user, sys_ = int(stat[11]) / tick, int(stat[12]) / tick
    io = dict(l.split(": ") for l in open(f"/proc/{p.pid}/io").read().splitlines())
    p.wait()
    summary = json.loads(err.strip().splitlines()[-1])
    shutil.rmtree(d, ignore_errors=True)
    return wall, user, sys_, int(io["rchar"]), summary.get("big_file_bytes_read"), summary.get("big_file_versions_from_writes"), summary["versions"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--dk", action="append", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--pages", type=int, default=164)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    app = os.path.join(a.work, "record_app.py")
    with open(app, "w") as f:
        f.write(APP)
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} work={a.work} load: {os.getloadavg()}")
    print("| run | binary | wall s | user s | sys s | rchar MiB | big_file_bytes_read MiB | from writes | versions | load (1 min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in range(a.runs):
        for dk in a.dk:
            wall, user, sys_, rchar, big, fw, versions = one(dk, a.work, app, a.pages, a.rounds)
            bigs = f"{big / 2**20:.1f}" if big is not None else "-"
            print(f"| {run + 1} | {dk} | {wall:.2f} | {user:.2f} | {sys_:.2f} | {rchar / 2**20:.1f} | {bigs} | {fw if fw is not None else '-'} | {versions} | {os.getloadavg()[0]:.1f} |", flush=True)
    print(f"# done {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} load: {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
