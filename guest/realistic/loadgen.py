#!/usr/bin/python3
# loadgen.py — drives the realistic guest's app.py and reports on the serial console in the same
# line protocol as the tiny guest (HANDOFF-READY/COUNTER/CHECK, see guest/tiny-init.sh). It
# exists so a demo or benchmark has a selectable, self-checking workload: "light" (a few small
# requests per second) or "heavy" (large values, a third of RAM rewritten continuously, and a
# scratch file rewritten and re-read so the page cache churns). Installed by
# guest/build-realistic.sh as /opt/handoff/loadgen.py; started by /sbin/handoff-init.
#
# The check runs in its own thread (the counter keeps ticking): every 10 s, 64 values read back
# must match the digests this process remembers (RAM) for what it wrote (disk); every 60 s and
# on a "check" line on /dev/ttyS1 (answered there too), sqlite's quick_check must pass as well.
import argparse
import hashlib
import http.client
import os
import random
import sys
import threading
import time

P = argparse.ArgumentParser()
P.add_argument("--load", default="light", choices=["light", "heavy"])
P.add_argument("--console", default="/dev/console")
P.add_argument("--cmd-port", default="/dev/ttyS1")
P.add_argument("--port", type=int, default=8080)
P.add_argument("--scratch", default="/var/lib/handoff-app/scratch.bin")
args = P.parse_args()

HEAVY = args.load == "heavy"
KEYS = 4000 if HEAVY else 20000
VALUE = (48 << 10, 96 << 10) if HEAVY else (100, 400)
PAUSE = 0.0 if HEAVY else 0.1
WRITERS = 2 if HEAVY else 1

con = open(args.console, "w", buffering=1)
lock = threading.Lock()
digests = {}          # key -> sha256 of the last value written (lives in RAM)
stats = {"puts": 0, "gets": 0, "errors": 0}
boot = open("/proc/sys/kernel/random/boot_id").read()[:8]
check_req = threading.Event()


def say(line):
    with lock:
        con.write(line + "\n")


def mem_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 256 << 20


class Client:
    def __init__(self):
        self.c = None

    def req(self, method, path, body=None):
        for attempt in range(3):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
                self.c.request(method, path, body=body)
                r = self.c.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.c = None
                time.sleep(0.5 * (attempt + 1))
        raise OSError("%s %s failed" % (method, path))


def writer(seed):
    rnd = random.Random(seed)
    cl = Client()
    block = os.urandom(VALUE[1])
    while True:
        k = "k%06d" % rnd.randrange(KEYS)
        n = rnd.randint(*VALUE)
        # fresh bytes each time, cheaply: a random slice of a random block with a unique prefix
        off = rnd.randrange(len(block) - n + 1)
        v = ("%s %f %d|" % (k, time.time(), rnd.getrandbits(64))).encode() + block[off:off + n]
        try:
            st, _ = cl.req("PUT", "/kv/" + k, v)
            if st == 204:
                with lock:
                    digests[k] = hashlib.sha256(v).hexdigest()
                    stats["puts"] += 1
            else:
                stats["errors"] += 1
        except OSError:
            stats["errors"] += 1
        if rnd.random() < 0.01:
            block = os.urandom(VALUE[1])
        if PAUSE:
            time.sleep(PAUSE)


def reader(seed):
    rnd = random.Random(seed)
    cl = Client()
    while True:
        k = "k%06d" % rnd.randrange(KEYS)
        try:
            cl.req("GET", "/kv/" + k)
            stats["gets"] += 1
        except OSError:
            stats["errors"] += 1
        time.sleep(PAUSE or 0.01)


def ram_churn(size, rate):
    """Keep `size` bytes of anonymous memory and rewrite about `rate` bytes of it per second."""
    buf = bytearray(size)
    chunk = os.urandom(1 << 20)
    rnd = random.Random(7)
    pos = 0
    while pos < size:  # touch it all once
        n = min(len(chunk), size - pos)
        buf[pos:pos + n] = chunk[:n]
        pos += n
    while True:
        t0 = time.time()
        done = 0
        while done < rate:
            off = rnd.randrange(0, size - len(chunk) + 1) & ~4095
            salt = rnd.getrandbits(32).to_bytes(4, "little")
            buf[off:off + len(chunk)] = chunk
            buf[off:off + 4] = salt
            done += len(chunk)
            if rnd.random() < 0.05:
                chunk = os.urandom(1 << 20)
        dt = time.time() - t0
        if dt < 1:
            time.sleep(1 - dt)


def cache_churn(size):
    """Rewrite and re-read a scratch file so the page cache keeps turning over."""
    rnd = random.Random(11)
    chunk = os.urandom(1 << 20)
    with open(args.scratch, "wb") as f:
        f.truncate(size)
    fd = os.open(args.scratch, os.O_RDWR)
    blocks = size >> 20
    while True:
        for _ in range(8):
            b = rnd.randrange(blocks)
            os.pwrite(fd, chunk[:4096 - 8] + rnd.getrandbits(64).to_bytes(8, "little") + chunk[4096:], b << 20)
        os.fdatasync(fd)
        for _ in range(16):
            os.pread(fd, 1 << 20, rnd.randrange(blocks) << 20)
        if rnd.random() < 0.1:
            chunk = os.urandom(1 << 20)
        time.sleep(0.2)


def check(full):
    cl = Client()
    why = []
    try:
        if full:
            st, body = cl.req("GET", "/check")
            if st != 200:
                why.append("quick_check=" + body.decode(errors="replace")[:40])
        with lock:
            sample = random.sample(sorted(digests.items()), min(64, len(digests)))
        for k, d in sample:
            st, v = cl.req("GET", "/kv/" + k)
            with lock:
                cur = digests.get(k)
            if st != 200 or (hashlib.sha256(v).hexdigest() not in (d, cur)):
                why.append("value:" + k)
                break
    except OSError as e:
        why.append("app:" + str(e)[:40])
    return why


def cmd_listener():
    try:
        import termios
        import tty
        fd = os.open(args.cmd_port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIFLUSH)
    except OSError:
        return None
    f = os.fdopen(fd, "rb", buffering=0)

    def loop():
        line = b""
        while True:
            c = f.read(1)
            if not c:
                time.sleep(1)
                continue
            if c == b"\n":
                if line.strip().startswith(b"check"):
                    check_req.set()
                line = b""
            else:
                line += c
    threading.Thread(target=loop, daemon=True).start()
    return fd


def main():
    cl = Client()
    for _ in range(600):
        try:
            cl.req("GET", "/stats")
            break
        except OSError:
            time.sleep(0.5)
    ram = mem_total()
    if HEAVY:
        threading.Thread(target=ram_churn, args=(ram // 3, 64 << 20), daemon=True).start()
        threading.Thread(target=cache_churn, args=(min(ram, 512 << 20),), daemon=True).start()
    else:
        # a few percent of RAM: 1/32 of it (at least 16 MiB) rewritten at 2 MiB/s
        threading.Thread(target=ram_churn, args=(max(16 << 20, ram // 32), 2 << 20), daemon=True).start()
    for i in range(WRITERS):
        threading.Thread(target=writer, args=(i,), daemon=True).start()
    threading.Thread(target=reader, args=(99,), daemon=True).start()
    cmdfd = cmd_listener()
    say("HANDOFF-READY boot=%s load=%s ram=%dM" % (boot, args.load, ram >> 20))
    threading.Thread(target=checker, args=(cmdfd,), daemon=True).start()
    while True:
        time.sleep(0.2)
        counter[0] += 1
        say("HANDOFF-COUNTER %d boot=%s puts=%d gets=%d errors=%d" %
            (counter[0], boot, stats["puts"], stats["gets"], stats["errors"]))


counter = [0]


def checker(cmdfd):
    """Every 10 s a sampled check; a full one (sqlite quick_check too) every 60 s and on request."""
    checks = 0
    last_full = time.time()
    while True:
        requested = check_req.wait(10)
        check_req.clear()
        full = requested or time.time() - last_full >= 60
        if full:
            last_full = time.time()
        why = check(full)
        checks += 1
        kind = "full" if full else "sample"
        if why:
            msg = "HANDOFF-CHECK fail n=%d checks=%d boot=%s %s reason=%s" % (counter[0], checks, boot, kind, ",".join(why))
        else:
            msg = "HANDOFF-CHECK ok n=%d checks=%d boot=%s %s keys=%d" % (counter[0], checks, boot, kind, len(digests))
        say(msg)
        if cmdfd is not None and requested:
            try:
                os.write(cmdfd, (msg + "\n").encode())
            except OSError:
                pass


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report, do not die silently
        say("HANDOFF-ERROR loadgen: %r" % (e,))
        raise
