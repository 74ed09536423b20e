# Rewrites DIR/state.bin COUNT times (0: until killed), one version every INTERVAL seconds, each replaced
# atomically (written to a temporary name, then renamed): SIZE bytes of body followed by the SHA-256 of the body,
# so any restored copy shows whether it is one whole version. MODE "random" makes every version new bytes; "edit"
# rewrites a tenth of the previous one (in ten places), as a growing database or a save file changes.
# After the last version it copies it to EXPECTED, creates DONE and waits until RELEASE exists.
# Usage: retention_writer.py DIR COUNT SIZE MODE INTERVAL EXPECTED DONE RELEASE
import hashlib, os, random, sys, time

d, count, size, mode, interval, expected, done, release = sys.argv[1:9]
count, size, interval = int(count), int(size), float(interval)
rng = random.Random(42)
body = bytearray(rng.randbytes(size))
n = 0
while count == 0 or n < count:
    n += 1
    if mode == "random" or n == 1:
        body = bytearray(rng.randbytes(size))
    else:
        for region in range(10):
            at = region * size // 10 + rng.randrange(size // 20)
            body[at:at + size // 100] = rng.randbytes(size // 100)
    data = bytes(body) + hashlib.sha256(body).digest()
    tmp = os.path.join(d, "state.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(d, "state.bin"))
    time.sleep(interval)

with open(expected, "wb") as f:
    f.write(data)
open(done, "w").close()
while not os.path.exists(release):
    time.sleep(0.02)
