#!/usr/bin/env python3
"""test_journal.py TCONSTD TCONST — sessions survive the coordinator: the
SQLite journal under --data-dir. Greedy decoding is deterministic, so a
session killed (kill -9) in the middle of a generation must continue exactly
where the uninterrupted run would be. Uses `tconst client`; stdlib only.
Label: e2e."""
import os, signal, subprocess, sys, tempfile, time

TCONSTD, TCONST = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp(prefix="tc_journal_")
data = os.path.join(tmp, "data")
fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Daemon:
    def __init__(self, *extra):
        self.extra = list(extra)

    def __enter__(self):
        # stderr to a file, not a pipe nobody reads while tconstd runs (a
        # full pipe would block its logging); read back with stderr()
        self.err_path = os.path.join(tmp, f"tconstd-{time.monotonic_ns()}.err")
        with open(self.err_path, "wb") as err:
            self.p = subprocess.Popen([TCONSTD, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                       "--data-dir", data, "--log-level", "warn", "--device", "cpu"] + self.extra,
                                      stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.p.stdout.readline()  # the ready line (or EOF if it died)
        if " ready: " not in line:
            self.p.kill()  # (if it still runs)
            self.p.wait()
            raise SystemExit("tconstd did not start: " + line + self.stderr())
        self.addr = line.split(" grpc ")[1].split()[0]
        return self

    def client(self, *args, check_rc=True):
        r = subprocess.run([TCONST, "client", *args, "--server", self.addr], capture_output=True, text=True,
                           timeout=120)
        if check_rc and r.returncode != 0:
            raise SystemExit(f"tconst client {' '.join(args)}: rc {r.returncode}: {r.stderr}")
        return r

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def kill9(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def __exit__(self, *a):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(timeout=60)


prompt = " ".join(str((i * 37) % 500 + 2) for i in range(70))  # crosses 2 windows of 32
total = 200
ref = subprocess.run([TCONST, "generate", "--tokens", prompt, "-n", str(total), "--ignore-eos"],
                     capture_output=True, text=True, check=True).stdout.split()
check(len(ref) == total, f"reference run: {total} greedy tokens")

# 1. kill -9 in the middle of a streaming generation
with Daemon() as d:
    d.client("session", "open", "--id", "s1", "--tokens", prompt)
    cl = subprocess.Popen([TCONST, "client", "session", "generate", "--id", "s1", "-n", "100000", "--ignore-eos",
                           "--server", d.addr], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen, buf = [], ""
    while len(seen) < 40:  # wait for 40 streamed tokens
        ch = cl.stdout.read(1)
        if not ch:
            break
        if ch in " \n":
            if buf:
                seen.append(buf)
            buf = ""
        else:
            buf += ch
    d.kill9()
    cl.wait(timeout=30)
check(len(seen) >= 40, f"client saw {len(seen)} tokens before kill -9")
check(seen[:40] == ref[:40], "streamed tokens match the reference")

with Daemon() as d:
    info = d.client("session", "get", "--id", "s1").stdout
    length = int(info.split("length ")[1].split(",")[0])
    k = length - 70  # generated tokens the journal kept
    check(k >= len(seen), f"journal kept {k} generated tokens >= the {len(seen)} the client saw")
    more = d.client("session", "generate", "--id", "s1", "-n", "20", "--ignore-eos").stdout.split()
    if k + 20 > len(ref):  # the generation ran further than the reference before the kill
        ref = subprocess.run([TCONST, "generate", "--tokens", prompt, "-n", str(k + 20), "--ignore-eos"],
                             capture_output=True, text=True, check=True).stdout.split()
    # the last journaled token is fed first, so the next token is ref[k]
    check(more == ref[k:k + 20], f"after restart the session continues at token {k} exactly")
    # 2. an append-only session and a closed one
    d.client("session", "open", "--id", "s2", "--tokens", "1 2 3")
    d.client("session", "append", "--id", "s2", "--tokens", " ".join(["4"] * 50))
    d.client("session", "open", "--id", "gone", "--tokens", "7 7 7")
    d.client("session", "close", "--id", "gone")

# 3. SIGTERM restart keeps sessions; closed ones stay closed
with Daemon() as d:
    r2 = d.client("session", "get", "--id", "s2").stdout
    check("length 53," in r2, "appended session restored with its 53 tokens: " + r2.strip())
    snap = d.client("session", "snapshot", "--id", "s2").stdout.split()
    check(snap == ("1 2 3 " + " ".join(["4"] * 50)).split(),
          f"a restored session's snapshot (its journaled history, not yet fed) is its 53 tokens: {len(snap)}")
    g = d.client("session", "generate", "--id", "s2", "-n", "8", "--ignore-eos").stdout.split()
    exp = subprocess.run([TCONST, "generate", "--tokens", "1 2 3 " + " ".join(["4"] * 50), "-n", "8", "--ignore-eos"],
                         capture_output=True, text=True, check=True).stdout.split()
    check(g == exp, "restored session generates what one run over its history generates")
    snap = d.client("session", "snapshot", "--id", "s2").stdout.split()
    check(snap == ("1 2 3 " + " ".join(["4"] * 50)).split() + g,
          f"... and its snapshot then is the 53 tokens and the 8 generated: {len(snap)}")
    d.client("session", "open", "--id", "s2copy", "--copy-from", "s2", "--tokens", "9 9")
    check(d.client("session", "snapshot", "--id", "s2copy").stdout.split() == snap + ["9", "9"],
          "session open --copy-from s2 --tokens '9 9': s2's history, then 9 9")
    d.client("session", "close", "--id", "s2copy")
    r = d.client("session", "get", "--id", "gone", check_rc=False)
    check(r.returncode != 0 and "NOT_FOUND" in r.stderr, "a closed session is not restored")
    # a second daemon on the same --data-dir is refused (it would merge sessions under one id)
    r = subprocess.run([TCONSTD, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode > 0 and "in use by another tconstd" in r.stderr,
          f"a second tconstd on the same --data-dir: exit {r.returncode}, {r.stderr.strip().splitlines()[-1:]}")

# 3b. restarted with --max-sessions below what the journal holds (s1, s2):
# every session is back and works; new ones wait until fewer are open
with Daemon("--max-sessions", "1") as d:
    r1 = d.client("session", "get", "--id", "s1", check_rc=False)
    r2 = d.client("session", "get", "--id", "s2", check_rc=False)
    check(r1.returncode == 0 and r2.returncode == 0, "--max-sessions 1 with 2 journaled sessions: both restored")
    g = d.client("session", "generate", "--id", "s2", "-n", "8", "--ignore-eos", check_rc=False).stdout.split()
    check(g == exp, "... and the second generates as before")
    # both placed on the workers at once (the placement was sized for 1)
    r1 = d.client("session", "generate", "--id", "s1", "-n", "4", "--ignore-eos", check_rc=False)
    check(r1.returncode == 0 and len(r1.stdout.split()) == 4, "... and the first generates too: " + r1.stderr.strip())
    r = d.client("session", "open", "--tokens", "5", check_rc=False)
    check(r.returncode != 0 and "RESOURCE_EXHAUSTED" in r.stderr, "... a new session is refused (over the limit)")
    d.client("session", "close", "--id", "s1")
    d.client("session", "close", "--id", "s2")
    r = d.client("session", "open", "--id", "s3", "--tokens", "5", check_rc=False)
    check(r.returncode == 0, "... and accepted once they are closed")
    d.p.send_signal(signal.SIGTERM)
    d.p.wait(timeout=60)
    err = d.stderr()
    check("scheduler:" not in err, "no scheduler error in the log" + (": " + err[-300:] if "scheduler:" in err else ""))

# 3c. a session closed while it generates is forgotten before CloseSession
# answers: a kill -9 right after the answer (the cancelled generation not
# necessarily retired yet) does not bring it back, and no rows of it remain
with Daemon() as d:
    d.client("session", "open", "--id", "busy", "--tokens", prompt)
    cl = subprocess.Popen([TCONST, "client", "session", "generate", "--id", "busy", "-n", "100000", "--ignore-eos",
                           "--server", d.addr], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    check(len(cl.stdout.read(40)) == 40, "the generation streams before its session is closed")
    # the worker processes stopped: the step in flight cannot finish, so
    # the cancelled generation cannot retire before the kill
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == d.p.pid]
    check(len(kids) >= 1, f"the daemon's worker processes ({len(kids)})")
    for k in kids:
        os.kill(k, signal.SIGSTOP)
    r = d.client("session", "close", "--id", "busy", check_rc=False)
    check(r.returncode == 0, "CloseSession on the busy session answers while its step is stuck: " + r.stderr.strip())
    d.kill9()
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cl.wait(timeout=30)
with Daemon() as d:
    r = d.client("session", "get", "--id", "busy", check_rc=False)
    check(r.returncode != 0 and "NOT_FOUND" in r.stderr, "a session closed while busy is not restored after kill -9")
    r = d.client("session", "get", "--id", "s3", check_rc=False)
    check(r.returncode == 0, "... while the other sessions are")
import sqlite3
with sqlite3.connect(os.path.join(data, "journal.db")) as db:
    # its history rows are deleted in the background: those the kill left
    # are found at the next start and deleted before that daemon stops
    n = db.execute("SELECT (SELECT count(*) FROM hist WHERE sk NOT IN (SELECT sk FROM sessions))"
                   " + (SELECT count(*) FROM gens WHERE session = 'busy')"
                   " + (SELECT count(*) FROM sessions WHERE id = 'busy')").fetchone()[0]
    live = db.execute("SELECT count(*) FROM hist").fetchone()[0]
check(n == 0 and live > 0, f"the journal holds no rows of the closed session ({n}), the others' are there ({live})")

# 3d. --max-session-tokens after a restart: a restored session's length
# counts once (its history was counted twice and every request refused)
with Daemon("--max-session-tokens", "60") as d:
    d.client("session", "open", "--id", "lim", "--tokens", " ".join(["5"] * 50))
with Daemon("--max-session-tokens", "60") as d:
    r = d.client("session", "append", "--id", "lim", "--tokens", " ".join(["6"] * 5), check_rc=False)
    check(r.returncode == 0 and "length 55," in r.stdout,
          f"restored 50-token session + 5 under --max-session-tokens 60: {r.stdout.strip()} {r.stderr.strip()}")
    g = d.client("session", "generate", "--id", "lim", "-n", "20", "--ignore-eos").stdout.split()
    check(len(g) == 5, f"... and a generation of 20 ends at the limit after 5: {len(g)}")

# 3e. a session row without an id (a hand-edited or damaged journal) stops
# the start naming the journal (it was restored as a session "(null)")
with sqlite3.connect(os.path.join(data, "journal.db")) as db:
    db.execute("INSERT INTO sessions (id, created_ms) VALUES (NULL, 5)")
r = subprocess.run([TCONSTD, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data],
                   capture_output=True, text=True, timeout=60)
check(r.returncode > 0 and "a session row without an id" in r.stderr,
      f"a session row without an id: exit {r.returncode}, {r.stderr.strip().splitlines()[-1:]}")
with sqlite3.connect(os.path.join(data, "journal.db")) as db:
    db.execute("DELETE FROM sessions WHERE id IS NULL")

# 4. a corrupt journal is a clear error, not a crash
with open(os.path.join(data, "journal.db"), "r+b") as f:
    f.seek(0)
    f.write(b"this is not sqlite" * 10)
for fn in ("journal.db-wal", "journal.db-shm"):
    try:
        os.remove(os.path.join(data, fn))
    except FileNotFoundError:
        pass
r = subprocess.run([TCONSTD, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data],
                   capture_output=True, text=True, timeout=60)
errs = [l for l in r.stderr.splitlines() if "error" in l]
check(r.returncode not in (0,) and r.returncode > 0 and any("journal" in l for l in errs),
      f"corrupt journal: exit {r.returncode}, {errs[-1] if errs else '(no message)'}")

subprocess.run(["rm", "-rf", tmp])
print("journal: all checks passed" if not fails else f"journal: {fails} failures")
sys.exit(1 if fails else 0)
