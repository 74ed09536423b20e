#!/usr/bin/env python3
"""DiffKeeper against the anchor tools on the workloads of ../shared/bench/gen_workloads.py (issue 3, item 5).

Run through bench/compare-anchors.sh, which installs the tools and generates the workloads; this file does the
measuring. Methodology follows ANCHOR-RESULTS.md:

* Every version of a workload is first brought into one live directory by rewriting only what changed (files
  rewritten in place, new files added, deleted files removed), untimed, as an editor or a build would; then each
  tool stores the live directory, timed. Store time per version = median over versions 1..N (version 0 is the
  initial full store and is reported apart).
* Delta tools (bsdiff, xdelta3, zstd --patch-from) keep v00 as `zstd -3` plus one forward patch per version
  against the previous version, read from the workload directory (a real tool would need to keep or rebuild it:
  that cost is not counted). Rebuilding the last version replays the whole chain. On a tree (W3) they diff
  deterministic tar streams; making the tar is counted; the previous tar is kept aside, not counted as stored.
* restic (always encrypted; repository v2, zstd) and borg (`-e none`, lz4) back up the live directory, one
  snapshot/archive per version.
* DiffKeeper: one `record --trace T --watch LIVE -- true` session per version (its baseline scan stores what
  changed; unchanged content is deduplicated). A binary whose `record` compacts (it has --no-compact) is measured
  as record leaves the trace, compaction included in the store times; an older one gets one `gc` after the last
  version (compaction writes the deltas; timed apart). Rebuilt with `export --session N` (the end of session N).
* Rebuild times are medians of RUNS (>= 5) runs into a new directory, each after an untimed `sync`, warm page
  cache, no fsync of the output. Peak RSS is the largest ru_maxrss of the command and its children (GNU time %M).
  Every rebuilt first and last version is compared with the workload byte for byte (untimed) before timing.
* Stored bytes: apparent size of every file of the store (repository, trace directory, v00.zst + patches).

Outputs a markdown report on stdout and in --report, and the raw samples as JSON next to it.
"""
import argparse
import datetime
import filecmp
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

MiB = 1 << 20
RSS_DIR = "/tmp"  # set in main to the scratch directory


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


# --- running and measuring -------------------------------------------------------------------------------

def run(argv, cwd=None, env=None):
    """Runs argv; returns (seconds, peak RSS in KiB of it and its children). Raises when it fails.

    The command runs under GNU time, whose %M is the command's ru_maxrss: a child forked from this Python process
    would report Python's own resident set (the kernel carries the pre-exec high-water mark over exec), so the
    small time process stands in between. Wall time is taken here; time's own fork and exec cost ~1 ms."""
    rss_file = os.path.join(RSS_DIR, "rss")
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file, *argv], cwd=cwd, env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()[-2000:]}")
    with open(rss_file) as f:
        rss = int(f.read().split()[-1])
    return elapsed, rss


def sh(script, cwd=None, env=None):
    return run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env)


def sync():
    os.sync()


def tree_bytes(path):
    if os.path.isfile(path):
        return os.lstat(path).st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def same_tree(a, b):
    """True when directory trees a and b hold the same files with the same bytes (and the same directories)."""
    def listing(top):
        out = set()
        for root, dirs, files in os.walk(top):
            rel = os.path.relpath(root, top)
            for d in dirs:
                out.add(("d", os.path.normpath(os.path.join(rel, d))))
            for f in files:
                out.add(("f", os.path.normpath(os.path.join(rel, f))))
        return out
    la, lb = listing(a), listing(b)
    if la != lb:
        return False
    return all(filecmp.cmp(os.path.join(a, p), os.path.join(b, p), shallow=False) for k, p in la if k == "f")


def sync_live(src, live):
    """Makes live equal to src touching only what differs (in-place rewrites, additions, deletions)."""
    os.makedirs(live, exist_ok=True)
    want = set()
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(live, rel), exist_ok=True)
        want.add(os.path.normpath(rel))
        for f in files:
            s = os.path.join(root, f)
            d = os.path.normpath(os.path.join(live, rel, f))
            want.add(os.path.normpath(os.path.join(rel, f)))
            if not os.path.exists(d) or not filecmp.cmp(s, d, shallow=False):
                with open(s, "rb") as fi, open(d, "r+b" if os.path.exists(d) else "wb") as fo:
                    shutil.copyfileobj(fi, fo, 4 * MiB)
                    fo.truncate()
    for root, dirs, files in os.walk(live, topdown=False):
        rel = os.path.relpath(root, live)
        for f in files:
            if os.path.normpath(os.path.join(rel, f)) not in want:
                os.unlink(os.path.join(root, f))
        for d in dirs:
            if os.path.normpath(os.path.join(rel, d)) not in want:
                os.rmdir(os.path.join(root, d))


class Trash:
    """Outputs are renamed away instead of deleted between timed runs (deleting thousands of inodes makes the
    next creates slow on ext4, see bench/run-all.sh); everything goes at the end."""

    def __init__(self, path):
        self.path = path
        self.n = 0
        os.makedirs(path, exist_ok=True)

    def take(self, p):
        if os.path.lexists(p):
            self.n += 1
            os.rename(p, os.path.join(self.path, str(self.n)))


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# --- tools ---------------------------------------------------------------------------------------------

class Workload:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.versions = sorted(d for d in os.listdir(root) if d.startswith("v") and d[1:].isdigit())
        first = os.path.join(root, self.versions[0])
        entries = os.listdir(first)
        self.tree = not (len(entries) == 1 and os.path.isfile(os.path.join(first, entries[0])))
        self.file = None if self.tree else entries[0]
        self.max_size = max(tree_bytes(self.vdir(v)) for v in self.versions)
        self.raw_total = sum(tree_bytes(self.vdir(v)) for v in self.versions)

    def vdir(self, v):
        return os.path.join(self.root, v)


class Tool:
    name = "?"
    chain = False

    def __init__(self, wl, work, live, env):
        self.wl, self.work, self.live, self.env = wl, work, live, env
        self.store = os.path.join(work, "store")
        os.makedirs(self.store, exist_ok=True)

    def setup(self):
        pass

    def store_version(self, k):
        raise NotImplementedError

    def restore(self, k, out):
        raise NotImplementedError

    def restored_root(self, out):
        """Where the rebuilt version's files are inside out."""
        return out

    def stored_bytes(self):
        return tree_bytes(self.store)

    def details(self):
        return None

    def after_store(self):
        """A step after the last version (DiffKeeper's gc); its figures, or None."""
        return None


class DeltaTool(Tool):
    """v00 as zstd -3, then one forward patch per version against the previous version."""
    chain = True

    def __init__(self, wl, work, live, env):
        super().__init__(wl, work, live, env)
        self.cache = os.path.join(work, "prev")  # previous tar (W3), not counted as stored
        self.tmp = os.path.join(work, "tmp")
        os.makedirs(self.cache, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        size = max(wl.max_size, 1)
        self.window_log = max(10, min(31, math.ceil(math.log2(size)) + 1))
        self.xd_window = 1 << max(20, min(31, math.ceil(math.log2(size))))

    def tar_cmd(self, out):
        return (f"tar -C '{self.live}' --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "
                f"-cf '{out}' .")

    def current(self, k):
        """(shell prefix making the input, path of the input) for version k."""
        if self.wl.tree:
            cur = os.path.join(self.cache, f"v{k:02d}.tar")
            return self.tar_cmd(cur) + " && ", cur
        return "", os.path.join(self.live, self.wl.file)

    def previous(self, k):
        if self.wl.tree:
            return os.path.join(self.cache, f"v{k - 1:02d}.tar")
        return os.path.join(self.wl.vdir(self.wl.versions[k - 1]), self.wl.file)

    def store_version(self, k):
        prefix, cur = self.current(k)
        if k == 0:
            r = sh(f"{prefix}zstd -3 -q -f '{cur}' -o '{self.store}/v00.zst'")
        else:
            r = sh(prefix + self.diff(self.previous(k), cur, os.path.join(self.store, f"p{k:02d}")))
        if self.wl.tree and k >= 2:
            os.unlink(self.previous(k - 1))
        return r

    def restore(self, k, out):
        steps = [f"zstd -d -q -f '{self.store}/v00.zst' -o '{self.tmp}/t0'"]
        for i in range(1, k + 1):
            src, dst = f"{self.tmp}/t{(i - 1) % 2}", f"{self.tmp}/t{i % 2}"
            steps.append(self.patch(src, os.path.join(self.store, f"p{i:02d}"), dst))
        final = f"{self.tmp}/t{k % 2}"
        if self.wl.tree:
            steps.append(f"mkdir -p '{out}' && tar -C '{out}' -xf '{final}'")
        else:
            steps.append(f"mkdir -p '{out}' && mv '{final}' '{out}/{self.wl.file}'")
        return sh(" && ".join(steps))


class BsdiffTool(DeltaTool):
    name = "bsdiff 4.3 (chain)"

    def diff(self, old, new, patch):
        return f"bsdiff '{old}' '{new}' '{patch}'"

    def patch(self, old, patch, new):
        return f"bspatch '{old}' '{new}' '{patch}'"


class Xdelta3Tool(DeltaTool):
    name = "xdelta3 -e (chain)"

    def diff(self, old, new, patch):
        return f"xdelta3 -e -f -B {self.xd_window} -s '{old}' '{new}' '{patch}'"

    def patch(self, old, patch, new):
        return f"xdelta3 -d -f -B {self.xd_window} -s '{old}' '{patch}' '{new}'"


class ZstdPatchTool(DeltaTool):
    name = "zstd -3 --patch-from (chain)"

    def diff(self, old, new, patch):
        return f"zstd -3 -q -f --long={self.window_log} --patch-from='{old}' '{new}' -o '{patch}'"

    def patch(self, old, patch, new):
        return f"zstd -d -q -f --long={self.window_log} --patch-from='{old}' '{patch}' -o '{new}'"


class ResticTool(Tool):
    name = "restic (CDC ~1 MiB, zstd)"

    def setup(self):
        self.env = dict(self.env, RESTIC_REPOSITORY=self.store, RESTIC_PASSWORD="anchors",
                        RESTIC_CACHE_DIR=os.path.join(self.work, "cache"))
        shutil.rmtree(self.store)
        run(["restic", "init", "-q", "--repository-version", "2"], env=self.env)

    def store_version(self, k):
        return run(["restic", "backup", "-q", "--host", "anchors", "--tag", f"v{k:02d}", self.live], env=self.env)

    def restore(self, k, out):
        return run(["restic", "restore", "-q", "latest", "--host", "anchors", "--tag", f"v{k:02d}", "--target", out],
                   env=self.env)

    def restored_root(self, out):
        return os.path.join(out, self.live.lstrip("/"))


class BorgTool(Tool):
    name = "borg (CDC ~2 MiB, lz4)"

    def setup(self):
        self.env = dict(self.env, BORG_REPO=self.store, BORG_BASE_DIR=os.path.join(self.work, "home"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        shutil.rmtree(self.store)
        run(["borg", "init", "-e", "none"], env=self.env)

    def store_version(self, k):
        return run(["borg", "create", "--compression", "lz4", f"::v{k:02d}", "."], cwd=self.live, env=self.env)

    def restore(self, k, out):
        os.makedirs(out)
        return run(["borg", "extract", f"::v{k:02d}"], cwd=out, env=self.env)


class DiffKeeperTool(Tool):
    name = "DiffKeeper"

    def __init__(self, wl, work, live, env, binary):
        super().__init__(wl, work, live, env)
        self.binary = binary
        self.trace = os.path.join(self.store, "trace")

    def store_version(self, k):
        # The scan backend: a version of a directory is its baseline; no kernel capture is needed for `true`.
        return run([self.binary, "record", "--trace", self.trace, "--watch", self.live, "--capture", "scan", "-q", "--", "true"],
                   env=self.env)

    def after_store(self):
        # Deltas are written by compaction. A binary whose `record` compacts its trace (issue 12: it has
        # --no-compact) is measured as record leaves it, compaction inside the store times; an older one after a
        # `gc` following the last version, its time reported apart, like git gc in ANCHOR-RESULTS.
        # DK_GC_ARGS forces the gc step (with those arguments) either way.
        if "--no-compact" in subprocess.run([self.binary, "record", "--help"], capture_output=True, text=True).stdout \
                and "DK_GC_ARGS" not in os.environ:
            return None
        if subprocess.run([self.binary, "gc", "--help"], capture_output=True).returncode != 0:
            return None
        before = self.stored_bytes()
        sync()
        # DK_GC_ARGS, e.g. "--snapshot-interval 20", measures another chain bound than the default.
        seconds, rss = run([self.binary, "gc", "--trace", self.trace, *os.environ.get("DK_GC_ARGS", "").split()], env=self.env)
        return {"gc_s": seconds, "gc_rss_kib": rss, "stored_before_gc": before}

    def details(self):
        """What the trace says it holds (diffkeeper stats --json), next to the directory size measured here."""
        p = subprocess.run([self.binary, "stats", "--trace", self.trace, "--json"], capture_output=True, text=True,
                           env=self.env)
        files = {os.path.relpath(os.path.join(r, f), self.trace): os.lstat(os.path.join(r, f)).st_size
                 for r, _, fs in os.walk(self.trace) for f in fs if not f.endswith(".pack")}
        return {"stats": json.loads(p.stdout) if p.returncode == 0 else p.stderr.strip(), "non_pack_files": files}

    def restore(self, k, out):
        # Session k + 1 recorded version k; its end is the version as stored.
        return run([self.binary, "export", "--trace", self.trace, "--session", str(k + 1), "--out", out],
                   env=self.env)


# --- one workload ----------------------------------------------------------------------------------------

def measure_tool(tool, wl, runs, trash, results):
    log(f"{wl.name}: {tool.name}")
    tool.setup()
    store_s, store_rss = [], []
    for k, v in enumerate(wl.versions):
        sync_live(wl.vdir(v), tool.live)
        sync()
        s, rss = tool.store_version(k)
        store_s.append(s)
        store_rss.append(rss)
    extra = tool.after_store()
    stored = tool.stored_bytes()
    sync()
    rebuild = {}
    restore_rss = []
    for label, k in (("first", 0), ("last", len(wl.versions) - 1)):
        samples = []
        for i in range(runs + 1):
            out = os.path.join(tool.work, "out")
            trash.take(out)
            sync()
            s, rss = tool.restore(k, out)
            restore_rss.append(rss)
            if i == 0:  # untimed check of the first run
                got = tool.restored_root(out)
                want = wl.vdir(wl.versions[k])
                ok = same_tree(want, got)
                if not ok:
                    raise RuntimeError(f"{tool.name} rebuilt {wl.name} {wl.versions[k]} wrong (in {got})")
            else:
                samples.append(s)
        trash.take(os.path.join(tool.work, "out"))
        rebuild[label] = samples
    results[tool.name] = {
        "stored_bytes": stored,
        "store_v0_s": store_s[0],
        "store_s": store_s[1:],
        "store_rss_kib": max(store_rss),
        "rebuild_first_s": rebuild["first"],
        "rebuild_last_s": rebuild["last"],
        "restore_rss_kib": max(restore_rss),
        "chain": tool.chain,
        "details": tool.details(),
        "after_store": extra,
    }


def measure_references(wl, work, runs, trash, results):
    """zstd -d of a full zstd -3 copy of the last version, and cp (cp -r for a tree) of it."""
    log(f"{wl.name}: references (zstd -d, cp)")
    os.makedirs(work, exist_ok=True)
    last = wl.vdir(wl.versions[-1])
    out = os.path.join(work, "out")
    if wl.tree:
        packed = os.path.join(work, "last.tar.zst")
        sh(f"tar -C '{last}' --sort=name --format=gnu -cf - . | zstd -3 -q -o '{packed}'")
        zstd_cmd = f"mkdir -p '{out}' && zstd -d -q -c '{packed}' | tar -C '{out}' -xf -"
        cp_cmd = f"cp -r '{last}' '{out}'"
    else:
        packed = os.path.join(work, "last.zst")
        run(["zstd", "-3", "-q", "-f", os.path.join(last, wl.file), "-o", packed])
        zstd_cmd = f"mkdir -p '{out}' && zstd -d -q -f '{packed}' -o '{out}/{wl.file}'"
        cp_cmd = f"mkdir -p '{out}' && cp '{last}/{wl.file}' '{out}/'"
    for name, cmd in (("zstd -d (full copy of last)", zstd_cmd), ("cp (full copy of last)", cp_cmd)):
        samples, rss_all = [], []
        for i in range(runs + 1):
            trash.take(out)
            sync()
            s, rss = sh(cmd)
            rss_all.append(rss)
            if i == 0:
                if not same_tree(last, out):
                    raise RuntimeError(f"{name} rebuilt {wl.name} wrong")
            else:
                samples.append(s)
        trash.take(out)
        results[name] = {"rebuild_last_s": samples, "restore_rss_kib": max(rss_all), "reference": True}


def measure_workload(wl, args, env):
    base = os.path.join(args.work, "runs", wl.name)
    if os.path.exists(base):
        shutil.rmtree(base)
    trash = Trash(os.path.join(base, "trash"))
    results = {}
    tools = []
    skipped = {}
    for key, cls in (("bsdiff", BsdiffTool), ("xdelta3", Xdelta3Tool), ("zstd", ZstdPatchTool),
                     ("restic", ResticTool), ("borg", BorgTool), ("diffkeeper", None)):
        if key in args.skip:
            skipped[key] = "skipped with --skip"
            continue
        if key == "bsdiff" and wl.max_size > args.bsdiff_max_mib * MiB:
            skipped[key] = (f"not run: {wl.max_size / MiB:.0f} MiB is over --bsdiff-max-mib {args.bsdiff_max_mib}; "
                            "ANCHOR-RESULTS measured > 120 s per delta and ~9x the input in RSS at 256 MiB")
            continue
        work = os.path.join(base, key)
        live = os.path.join(base, key, "live")
        if cls is None:
            tools.append(DiffKeeperTool(wl, work, live, env, args.diffkeeper))
        else:
            tools.append(cls(wl, work, live, env))
    for tool in tools:
        try:
            measure_tool(tool, wl, args.runs, trash, results)
        except Exception as e:  # report and go on with the other tools
            log(f"{wl.name}: {tool.name} failed: {e}")
            skipped[tool.name] = f"failed: {str(e)[:300]}"
    measure_references(wl, os.path.join(base, "reference"), args.runs, trash, results)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return {"raw_total": wl.raw_total, "versions": len(wl.versions), "max_size": wl.max_size,
            "tree": wl.tree, "results": results, "skipped": skipped}


# --- report ----------------------------------------------------------------------------------------------

def ms(s):
    v = s * 1000
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def mib(b):
    return f"{b / MiB:,.2f}"


def report(all_results, meta):
    lines = [f"# DiffKeeper vs anchors ({meta['date']})", "",
             f"Machine: {meta['machine']}. Load average at start {meta['load_start']}, at end {meta['load_end']} "
             "(the machine is shared; figures taken under load are inflated, ratios between tools measured "
             "moments apart are more robust than any single figure).",
             f"DiffKeeper: {meta['diffkeeper']} ({meta['dk_version']}). Rebuilds: median of {meta['runs']} runs; "
             "store per version: median of versions 1..N (v0 is a full store). Tools run as CLI commands, process "
             "start-up included (see ANCHOR-RESULTS.md W0 for those fixed costs).", ""]
    ratios = ["## Acceptance ratios (issue 3)", "",
              "| workload | DiffKeeper stored ÷ smallest anchor (≤ 1.03) | rebuild last ÷ reference (≤ 1.2 zstd -d; W3 ≤ 1 cp -r) "
              "| fastest anchor chain ÷ DiffKeeper rebuild last (≥ 10 on W2, W4) | store per version ÷ zstd --patch-from (≤ 1) |",
              "|---|---:|---:|---:|---:|"]
    for name, w in all_results.items():
        r = w["results"]
        lines += [f"## {name}", "",
                  f"{w['versions']} versions, Σ raw {mib(w['raw_total'])} MiB, largest version {mib(w['max_size'])} MiB.", "",
                  "| tool | stored MiB | savings % | store v0 ms | store per version ms | rebuild first ms | rebuild last ms | peak RSS store / rebuild MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for tool, x in r.items():
            if x.get("reference"):
                lines.append(f"| {tool} | – | – | – | – | – | {ms(median(x['rebuild_last_s']))} | – / {x['restore_rss_kib'] / 1024:.1f} |")
                continue
            lines.append(
                f"| {tool} | {mib(x['stored_bytes'])} | {100 * (1 - x['stored_bytes'] / w['raw_total']):.1f} | "
                f"{ms(x['store_v0_s'])} | {ms(median(x['store_s']))} | {ms(median(x['rebuild_first_s']))} | "
                f"{ms(median(x['rebuild_last_s']))} | {x['store_rss_kib'] / 1024:.1f} / {x['restore_rss_kib'] / 1024:.1f} |")
        gc = (r.get("DiffKeeper") or {}).get("after_store")
        if gc:
            lines.append(f"\n- DiffKeeper: stored bytes and rebuilds are after `diffkeeper gc` following the last version "
                         f"(took {ms(gc['gc_s'])} ms, peak RSS {gc['gc_rss_kib'] / 1024:.1f} MiB, not in the store times); "
                         f"before it the trace held {mib(gc['stored_before_gc'])} MiB.")
        det = (r.get("DiffKeeper") or {}).get("details")
        if det and isinstance(det.get("stats"), dict):
            st = det["stats"]
            lines.append(f"\n- DiffKeeper trace: `stats` reports stored {mib(st.get('stored_bytes', 0))} MiB in packs, "
                         f"catalog {mib(st.get('catalog_bytes', 0))} MiB, {st.get('versions')} versions, "
                         f"{st.get('blobs')} blobs; the table counts every file of the trace directory.")
            if isinstance(st.get("worst_rebuild"), dict):
                wr = st["worst_rebuild"]
                lines.append(f"\n- DiffKeeper worst rebuild (`stats`): {wr['ratio']:.2f}x, {mib(wr['decoded_bytes'])} MiB decoded "
                             f"for {mib(wr['size'])} MiB, a chain of {wr['deltas']} deltas (session {wr['session']}, {wr['path']}).")
            if not (r.get("DiffKeeper") or {}).get("after_store"):
                lines.append("\n- DiffKeeper: stored bytes and rebuilds are as `record` left the trace (no manual gc).")
        for tool, why in w["skipped"].items():
            lines.append(f"\n- {tool}: {why}")
        lines.append("")

        dk = r.get("DiffKeeper")
        anchors = {t: x for t, x in r.items() if not x.get("reference") and t != "DiffKeeper"}
        if not dk or not anchors:
            continue
        smallest = min(anchors.items(), key=lambda kv: kv[1]["stored_bytes"])
        stored_ratio = f"{dk['stored_bytes'] / smallest[1]['stored_bytes']:.2f} (vs {smallest[0]})"
        dk_last = median(dk["rebuild_last_s"])
        ref_name = "cp (full copy of last)" if w["tree"] else "zstd -d (full copy of last)"
        ref = r.get(ref_name)
        ref_ratio = f"{dk_last / median(ref['rebuild_last_s']):.2f} (vs {ref_name.split(' (')[0]})" if ref else "–"
        chains = {t: median(x["rebuild_last_s"]) for t, x in anchors.items() if x["chain"]}
        chain_ratio = "–"
        if chains:
            fastest = min(chains.items(), key=lambda kv: kv[1])
            chain_ratio = f"{fastest[1] / dk_last:.2f} (vs {fastest[0]})"
        zp = anchors.get(ZstdPatchTool.name)
        store_ratio = f"{median(dk['store_s']) / median(zp['store_s']):.2f}" if zp else "–"
        ratios.append(f"| {name} | {stored_ratio} | {ref_ratio} | {chain_ratio} | {store_ratio} |")
    ratios.append("")
    ratios.append("Store per version: DiffKeeper is measured as a whole `record` process (start-up, baseline scan, "
                  "reconcile scan); the acceptance figure is meant in process, so this ratio is an upper bound.")
    return "\n".join(lines[:5] + ratios + [""] + lines[5:]) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", required=True, help="directory holding W1..W4 from gen_workloads.py")
    ap.add_argument("--work", required=True, help="scratch directory (stores, outputs)")
    ap.add_argument("--only", default="W1,W2,W3,W4")
    ap.add_argument("--skip", default="", help="tools to leave out: bsdiff,xdelta3,zstd,restic,borg,diffkeeper")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bsdiff-max-mib", type=int, default=64)
    ap.add_argument("--diffkeeper", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.runs = max(5, args.runs)
    global RSS_DIR
    RSS_DIR = args.work
    os.makedirs(RSS_DIR, exist_ok=True)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    env = dict(os.environ, LC_ALL="C")
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{os.cpu_count()} cores, {subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}",
        "load_start": open("/proc/loadavg").read().split()[:3],
        "diffkeeper": args.diffkeeper,
        "dk_version": subprocess.run([args.diffkeeper, "--version"], capture_output=True, text=True).stdout.strip(),
        "runs": args.runs,
    }
    all_results = {}
    for name in [w.strip() for w in args.only.split(",") if w.strip()]:
        wl = Workload(name, os.path.join(args.workloads, name))
        t0 = time.time()
        all_results[name] = measure_workload(wl, args, env)
        log(f"{name} took {time.time() - t0:.0f} s")
    meta["load_end"] = open("/proc/loadavg").read().split()[:3]
    text = report(all_results, meta)
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    with open(args.report, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.report)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "workloads": all_results}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
