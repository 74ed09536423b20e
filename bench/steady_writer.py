"""Writes at a steady rate into a state directory: RATE appends a second to log.txt (one line each, through
os.write), and every 100th write also rewrites counter.txt. Runs for SECONDS. Usage: steady_writer.py DIR RATE SECONDS"""
import os, sys, time
d, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
log = os.open(os.path.join(d, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    n += 1
    os.write(log, b"write %d at %.6f\n" % (n, time.monotonic()))
    if n % 100 == 0:
        with open(os.path.join(d, "counter.txt"), "w") as f:
            f.write(str(n))
    delay = start + n / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
