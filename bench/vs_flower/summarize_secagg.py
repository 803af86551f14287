"""Summarises alternate_secagg.sh's runs (harness code).

  summarize_secagg.py RUNS_DIR [RUNS_DIR ...] [--first 2] [--last 5]

Per run, medians over rounds FIRST..LAST:
  Flower  round      workflow start -> sum unmasked (the driver's round_s)
          gap        previous round's end -> this round's end
          server CPU flower-server + driver process CPU over the gap
          unmask+agg the driver's computation summing the masked vectors and
                     unmasking the sum (wall; CPU beside it)
          peak       VmHWM of flower-server + VmHWM of the driver after the run
  Shoal   gap        commit -> commit (server log stamps, ms)
          server CPU the server's threads' on-CPU time between the commits
                     (schedstat)
          unmask+agg the group's masked-input phase + unmask phase (the
                     server's 'group ... unmasked' log line; wall, CPU beside)
          peak       the server's VmHWM after the run
Then the medians over the runs that completed every round with every
client, the Flower/Shoal ratios beside the issue's goals (server CPU and
unmask+aggregate at least 20x lower, round wall time at least 5x, peak
memory at most a tenth), and the load averages at the runs' starts.
"""
import json
import os
import re
import statistics as st
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None


def read_meta(d):
    m = {}
    try:
        for line in open(os.path.join(d, "meta.txt")):
            k, _, v = line.rstrip("\n").partition(" ")
            m.setdefault(k, v)
    except OSError:
        pass
    return m


def load1(s):
    mm = re.search(r"load average: ([\d.]+), ([\d.]+), ([\d.]+)", s or "")
    return float(mm.group(1)) if mm else None


def jsonl(path):
    try:
        return [json.loads(line) for line in open(path) if line.strip()]
    except OSError:
        return []


def flower_run(d, first, last):
    m = read_meta(d)
    recs = jsonl(os.path.join(d, "rounds.jsonl"))
    head = next((r for r in recs if "config" in r), {})
    n = head.get("clients")
    rounds = {r["round"]: r for r in recs if "round" in r}
    sel = [rounds[k] for k in range(first, last + 1) if k in rounds]
    end = next((r for r in recs if r.get("end")), {})
    complete = all(all(c == n for c in r["results"]) and len(r["results"]) == 4
                   for r in rounds.values())
    ccpu = [rounds[k]["clients_cpu_s"] - rounds[k - 1]["clients_cpu_s"]
            for k in range(first, last + 1)
            if k in rounds and k - 1 in rounds and rounds[k]["clients_cpu_s"] is not None
            and rounds[k - 1]["clients_cpu_s"] is not None]
    return {
        "ok": m.get("status") == "ok" and m.get("driver_exit") == "0"
        and len(sel) == last - first + 1 and complete,
        "rounds": len(rounds),
        "config": head.get("config"),
        "round_s": med([r["round_s"] for r in sel]),
        "round_min": min([r["round_s"] for r in sel], default=None),
        "round_max": max([r["round_s"] for r in sel], default=None),
        "gap_s": med([r["gap_s"] for r in sel]),
        "cpu_s": med([r["server_cpu_total_s"] for r in sel]),
        "server_cpu_s": med([r["server_cpu_s"] for r in sel]),
        "driver_cpu_s": med([r["driver_cpu_s"] for r in sel]),
        "unmask_s": med([r["agg_unmask_s"] for r in sel]),
        "unmask_cpu_s": med([r["agg_unmask_cpu_s"] for r in sel]),
        "stages": [med([r["stage_s"][i] for r in sel if len(r["stage_s"]) > i]) for i in range(4)],
        "peak_mib": end.get("hwm_mib"),
        "peak_server_mib": end.get("server_hwm_mib"),
        "peak_driver_mib": end.get("driver_hwm_mib"),
        "client_cpu_s": med(ccpu),
        "load_start": load1(m.get("uptime_start")),
        "load_end": load1(m.get("uptime_end")),
        "status": m.get("status"),
    }


def shoal_run(d, first, last):
    m = read_meta(d)
    recs = jsonl(os.path.join(d, "samples.jsonl"))
    n = int(m["system"].split(" n ")[1].split()[0]) if " n " in m.get("system", "") else None
    deg = re.search(r"degree (\d+) and threshold (\d+)", open(os.path.join(d, "meta.txt")).read()
                    if os.path.exists(os.path.join(d, "meta.txt")) else "")
    commits = {r["version"]: r for r in recs if r["kind"] == "commit"}
    groups = {r["round"]: r for r in recs if r["kind"] == "group"}
    end = next((r for r in recs if r["kind"] == "end"), {})
    gaps, cpus, ticks, unmask, unmask_cpu, ccpu = [], [], [], [], [], []
    for v in range(first, last + 1):
        if v in commits and v - 1 in commits:
            a, b = commits[v - 1], commits[v]
            gaps.append(b["log_t"] - a["log_t"])
            cpus.append(b["sched_s"] - a["sched_s"])
            ticks.append(b["cpu_s"] - a["cpu_s"])
            if a.get("client_cpu_s") is not None and b.get("client_cpu_s") is not None:
                ccpu.append(b["client_cpu_s"] - a["client_cpu_s"])
        if v in groups:
            g = groups[v]
            unmask.append((g["inputs_ms"] + g["unmask_ms"]) / 1000.0)
            unmask_cpu.append((g["inputs_cpu_ms"] + g["unmask_cpu_ms"]) / 1000.0)
    complete = all(g["survivors"] == n for g in groups.values()) and \
        all(c["reports"] == n for c in commits.values())
    return {
        "ok": m.get("status") == "ok" and m.get("fleet_exit") == "0"
        and len(gaps) == last - first + 1 and len(unmask) == last - first + 1 and complete,
        "rounds": len(commits),
        "degree": int(deg.group(1)) if deg else None,
        "threshold": int(deg.group(2)) if deg else None,
        "gap_s": med(gaps),
        "gap_min": min(gaps, default=None),
        "gap_max": max(gaps, default=None),
        "cpu_s": med(cpus),
        "cpu_ticks_s": med(ticks),
        "unmask_s": med(unmask),
        "unmask_cpu_s": med(unmask_cpu),
        "peak_mib": end.get("hwm_mib"),
        "client_cpu_s": med(ccpu),
        "load_start": load1(m.get("uptime_start")),
        "load_end": load1(m.get("uptime_end")),
        "status": m.get("status"),
        "fleet": m.get("fleet_summary"),
    }


def fmt(x, p=2):
    return "-" if x is None else f"{x:.{p}f}"


def spread(xs, p=2):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{st.median(xs):.{p}f} ({min(xs):.{p}f}-{max(xs):.{p}f})"


def main():
    args, roots = sys.argv[1:], []
    first, last = 2, 5
    while args:
        a = args.pop(0)
        if a == "--first":
            first = int(args.pop(0))
        elif a == "--last":
            last = int(args.pop(0))
        else:
            roots.append(a)
    F, S = [], []
    for root in roots:
        runs = sorted(r for r in os.listdir(root) if re.match(r"^[FS]\d+$", r))
        name = os.path.basename(os.path.normpath(root))
        F += [(f"{name}/{r}", flower_run(os.path.join(root, r), first, last))
              for r in runs if r[0] == "F"]
        S += [(f"{name}/{r}", shoal_run(os.path.join(root, r), first, last))
              for r in runs if r[0] == "S"]
    for name, r in F:
        print(f"{name}: ok={r['ok']} rounds={r['rounds']} round={fmt(r['round_s'])} "
              f"({fmt(r['round_min'])}-{fmt(r['round_max'])}) gap={fmt(r['gap_s'])} "
              f"cpu={fmt(r['cpu_s'], 3)} (server {fmt(r['server_cpu_s'])} driver "
              f"{fmt(r['driver_cpu_s'])}) unmask+agg={fmt(r['unmask_s'], 3)} "
              f"(cpu {fmt(r['unmask_cpu_s'], 3)}) stages={[fmt(x) for x in r['stages']]} "
              f"peak={fmt(r['peak_mib'], 0)} (server {fmt(r['peak_server_mib'], 0)} driver "
              f"{fmt(r['peak_driver_mib'], 0)}) clients_cpu/round={fmt(r['client_cpu_s'])} "
              f"load={r['load_start']}->{r['load_end']} {r['status']}")
    for name, r in S:
        print(f"{name}: ok={r['ok']} commits={r['rounds']} k={r['degree']} t={r['threshold']} "
              f"gap={fmt(r['gap_s'])} ({fmt(r['gap_min'])}-{fmt(r['gap_max'])}) "
              f"cpu={fmt(r['cpu_s'], 3)} (ticks {fmt(r['cpu_ticks_s'])}) "
              f"unmask+agg={fmt(r['unmask_s'], 4)} (cpu {fmt(r['unmask_cpu_s'], 4)}) "
              f"peak={fmt(r['peak_mib'], 0)} fleet_cpu/round={fmt(r['client_cpu_s'])} "
              f"load={r['load_start']}->{r['load_end']} {r['status']} | {r['fleet']}")
    Fo = [r for _, r in F if r["ok"]]
    So = [r for _, r in S if r["ok"]]
    print(f"\nruns that completed: Flower {len(Fo)} of {len(F)}, Shoal {len(So)} of {len(S)}; "
          f"medians of rounds {first}-{last} per run, then median (min-max) over runs")
    rows = [
        ("round wall time s", [r["round_s"] for r in Fo], [r["gap_s"] for r in So], 5, 2),
        ("  (Flower end to end)", [r["gap_s"] for r in Fo], [r["gap_s"] for r in So], None, 2),
        ("server CPU s/round", [r["cpu_s"] for r in Fo], [r["cpu_s"] for r in So], 20, 3),
        ("unmask+aggregate s", [r["unmask_s"] for r in Fo], [r["unmask_s"] for r in So], 20, 4),
        ("  (its CPU s)", [r["unmask_cpu_s"] for r in Fo], [r["unmask_cpu_s"] for r in So], None, 4),
        ("server peak RSS MiB", [r["peak_mib"] for r in Fo], [r["peak_mib"] for r in So], 10, 0),
        ("client CPU s/round", [r["client_cpu_s"] for r in Fo], [r["client_cpu_s"] for r in So],
         None, 2),
        ("load1 at start", [r["load_start"] for _, r in F], [r["load_start"] for _, r in S], None, 1),
    ]
    summary = {}
    print(f"| measure | Flower 1.6 SecAgg+ | Shoal | Flower / Shoal | goal |")
    print("|---|---:|---:|---:|---|")
    for label, fx, sx, goal, p in rows:
        fm, sm = med(fx), med(sx)
        ratio = fm / sm if fm and sm else None
        g = ""
        if goal and ratio:
            g = f">= {goal}x: {'met' if ratio >= goal else 'not met'}"
        print(f"| {label} | {spread(fx, p)} | {spread(sx, p)} | "
              f"{'' if ratio is None or label.startswith('load') else f'{ratio:.1f}x'} | {g} |")
        summary[label.strip()] = {"flower": fm, "shoal": sm, "ratio": ratio}
    loads = [r["load_start"] for _, r in F + S if r["load_start"] is not None]
    if loads and max(loads) > 1:
        print(f"\nload average at the starts {min(loads):.1f}-{max(loads):.1f} (> 1 on 2 CPUs): "
              "the times are not quotable as this machine's; the ratios are, with care")
    with open(os.path.join(roots[0], "summary.json"), "w") as f:
        json.dump({"first": first, "last": last, "flower_runs": len(Fo), "shoal_runs": len(So),
                   "rows": summary}, f, indent=1)


if __name__ == "__main__":
    main()
