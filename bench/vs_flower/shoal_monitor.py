"""Samples a shoal-server process at each round commit (harness code;
adapted from the FedAvg comparison's monitor).

  shoal_monitor.py --pid PID --log server.log --out samples.jsonl --stop FILE [--limit S]

Tails the server log; for every 'round N committed as version V' line it
reads utime+stime of /proc/PID/stat (all threads, 10 ms ticks), the
summed schedstat run time and run-queue wait of its threads (ns), and VmRSS/VmHWM of
/proc/PID/status, and writes one JSON line with the log's own timestamp
(ms) and the sampling time. A first line ("start") is written at once; when
FILE appears (or the server exits, or --limit seconds pass) a last line
("end") adds each thread's CPU from /proc/PID/task/*/stat. With
--client-pid-file, each line also has the load generator's CPU.
Each secure-aggregation 'group G of round R unmasked' line gives a line
("group") with its survivors and its masked-input and unmask times (wall
and CPU, ms).
"""
import argparse
import calendar
import json
import os
import re
import time

TICK = os.sysconf("SC_CLK_TCK")
COMMIT = re.compile(r"^(\S+) .*round (\d+) committed as version (\d+): (\d+) reports")
GROUP = re.compile(r"^(\S+) .*group (\d+) of round (\d+) unmasked: (\d+) of (\d+) devices, "
                   r"dropped (\d+)/(\d+)/(\d+)/(\d+) .*; masked inputs ([\d.]+) ms \(CPU ([\d.]+) ms\), "
                   r"unmasking ([\d.]+) ms \(CPU ([\d.]+) ms\)")


def cpu_s(path):
    with open(path) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime = field 14, stime = field 15
    return (int(fields[11]) + int(fields[12])) / TICK, s[s.index("(") + 1:s.rindex(")")]


def mem_mib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out.get("VmRSS", 0) / 1024.0, out.get("VmHWM", 0) / 1024.0, out.get("Threads", 0)


def log_ts(stamp):
    # 2026-12-07T05:38:03.927Z
    base, frac = stamp.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000.0


def sched_s(pid):
    """Sums of the threads' on-CPU time and run-queue wait from schedstat
    (ns resolution); only threads alive now are counted (shoal-server's
    threads live as long as it does)."""
    run = wait = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                v = f.read().split()
                run += int(v[0])
                wait += int(v[1])
        except OSError:
            pass
    return run / 1e9, wait / 1e9


CLIENT_PID_FILE = None


def client_cpu():
    """CPU of the load generator (shoal-fleet), whose PID is written to a
    file once it has started; None before that."""
    try:
        pid = open(CLIENT_PID_FILE).read().strip()
        return cpu_s(f"/proc/{pid}/stat")[0] if pid else None
    except (OSError, TypeError):
        return None


def sample(pid, kind, **extra):
    c, _ = cpu_s(f"/proc/{pid}/stat")
    rss, hwm, threads = mem_mib(pid)
    run, wait = sched_s(pid)
    rec = {"kind": kind, "t": time.time(), "cpu_s": c, "sched_s": run, "sched_wait_s": wait,
           "rss_mib": rss, "hwm_mib": hwm, "threads": threads, "client_cpu_s": client_cpu()}
    rec.update(extra)
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop", required=True)
    ap.add_argument("--limit", type=float, default=900)
    ap.add_argument("--client-pid-file")
    a = ap.parse_args()
    global CLIENT_PID_FILE
    CLIENT_PID_FILE = a.client_pid_file
    t_end = time.time() + a.limit
    with open(a.out, "w") as out, open(a.log) as log:
        out.write(json.dumps(sample(a.pid, "start")) + "\n")
        out.flush()
        buf = ""
        while True:
            chunk = log.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split("\n")
                for line in lines:
                    g = GROUP.match(line)
                    if g:
                        out.write(json.dumps({
                            "kind": "group", "log_t": log_ts(g.group(1)), "group": int(g.group(2)),
                            "round": int(g.group(3)), "survivors": int(g.group(4)),
                            "n": int(g.group(5)), "dropped": [int(g.group(i)) for i in range(6, 10)],
                            "inputs_ms": float(g.group(10)), "inputs_cpu_ms": float(g.group(11)),
                            "unmask_ms": float(g.group(12)), "unmask_cpu_ms": float(g.group(13))}) + "\n")
                        out.flush()
                        continue
                    m = COMMIT.match(line)
                    if m:
                        try:
                            rec = sample(a.pid, "commit", round=int(m.group(2)),
                                         version=int(m.group(3)), reports=int(m.group(4)),
                                         log_t=log_ts(m.group(1)))
                        except OSError:
                            break
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
            if os.path.exists(a.stop) or time.time() > t_end:
                break
            if not os.path.exists(f"/proc/{a.pid}"):
                out.write(json.dumps({"kind": "gone", "t": time.time()}) + "\n")
                return
            time.sleep(0.01)
        try:
            rec = sample(a.pid, "end")
            threads = {}
            for tid in os.listdir(f"/proc/{a.pid}/task"):
                try:
                    c, name = cpu_s(f"/proc/{a.pid}/task/{tid}/stat")
                except OSError:
                    continue
                threads[f"{name}:{tid}"] = c
            rec["thread_cpu_s"] = threads
            out.write(json.dumps(rec) + "\n")
        except OSError:
            out.write(json.dumps({"kind": "gone", "t": time.time()}) + "\n")


if __name__ == "__main__":
    main()
