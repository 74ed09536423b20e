# Prints "ok N" when the database passes PRAGMA integrity_check, every row's digest matches its payload, and
# rows 1..N are all present with no gap; otherwise prints what is wrong.
import sqlite3, sys

db = sqlite3.connect(sys.argv[1])
check = db.execute("PRAGMA integrity_check").fetchall()
if check != [("ok",)]:
    print("corrupt", check[:5])
    sys.exit(0)
if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchall():
    print("ok 0")  # a state from before the workload created its table
    sys.exit(0)
rows = db.execute("SELECT n, payload, digest FROM t ORDER BY n").fetchall()
bad = [n for (n, p, d) in rows if sum(p) % 65521 != d]
if bad:
    print("bad digests", bad[:5])
    sys.exit(0)
ns = [r[0] for r in rows]
if ns != list(range(1, len(ns) + 1)):
    print("gap", [x for x in range(1, (ns[-1] if ns else 0) + 1) if x not in set(ns)][:5])
    sys.exit(0)
print("ok", len(ns))
