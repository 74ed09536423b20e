# Commits numbered transactions into a SQLite database in WAL mode with synchronous=FULL and prints each
# number once its COMMIT has returned (the acknowledgement). A small auto-checkpoint threshold makes checkpoints
# (WAL frames copied into the database file, then the WAL restarted) happen every few dozen commits.
import os, sqlite3, sys

path = sys.argv[1]
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("PRAGMA wal_autocheckpoint=50")
db.execute("CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, payload BLOB NOT NULL, digest INTEGER NOT NULL)")
n = (db.execute("SELECT coalesce(max(n), 0) FROM t").fetchone()[0]) + 1
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 62
while n <= limit:
    payload = os.urandom(20 + (n * 37) % 400)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?, ?)", (n, payload, sum(payload) % 65521))
    db.execute("UPDATE t SET digest = digest WHERE n = ?", (max(1, n // 2),))
    db.execute("COMMIT")
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()
    n += 1
