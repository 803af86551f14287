"""Drives Flower 1.6.0's SecAgg+ workflow (examples/secaggplus-mt at tag
v1.6.0) round after round and times it (harness code, not Flower's).

  flower_secagg_driver.py --driver 127.0.0.1:P --clients N --dim D --rounds R
      --example-dir DIR --server-pid PID --out rounds.jsonl
      [--poll-s 0.5] [--stage-timeout-s 120]

The protocol is the example's own: workflows.py is imported from DIR (the
example as Flower's repository has it; setup_flower.sh puts it there) and
run with its configuration (3 shares, threshold 2, clipping range 3, target
range 2^20, mod range 2^30), with LOG_EXPLAIN off so that no round prints
its vectors. This file replaces the example's driver.py, keeping its loop:
sample all N nodes, sleep poll-s, then for each stage push the workflow's
TaskIns, sleep poll-s, pull TaskRes every poll-s until all are in or
stage-timeout-s passes, and sleep poll-s after the round. What differs from
driver.py: the parameters are D float32 zeros (not 3 ones), N nodes a
round, the stage timeout is stage-timeout-s (driver.py's 3.9 s would drop
clients that answer later than that, which at 100 x 100K most do), and the
timing below.

Per round one JSON line:
  round_s        workflow start (first TaskIns built) -> workflow end (sum unmasked)
  gap_s          end of the previous round -> end of this one (round 1: none)
  stage_s        per stage: push -> last result pulled (5 stages: setup,
                 share keys, collect masked input, unmask, and the final
                 computation as stage 5 with its compute time only)
  compute_s, compute_cpu_s   per workflow step: wall time and process CPU
                 of the driver's own computation (workflow.send; process CPU,
                 since Flower's combine_shares runs in a thread pool)
  agg_unmask_s, agg_unmask_cpu_s  steps 4 + 5: summing the masked vectors,
                 then rebuilding the secrets, removing the masks,
                 dequantising (what shoal-server's group does in its
                 masked-input and unmask phases)
  results        TaskRes count per stage (all N when nobody dropped)
  server_cpu_s, driver_cpu_s   CPU over gap_s (over round_s in round 1) of
                 the flower-server process (/proc/PID/stat, 10 ms ticks) and
                 of this driver process; server_cpu_total_s their sum
  hwm_mib        VmHWM of flower-server + of this driver at the round's end
  clients_cpu_s  cumulative CPU of the client processes ($CLIENT_PIDS_FILE)
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np

from flwr.common import ndarrays_to_parameters
from flwr.driver import GrpcDriver
from flwr.proto import driver_pb2, node_pb2, task_pb2

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def hwm_mib(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def clients_cpu_s():
    path = os.environ.get("CLIENT_PIDS_FILE")
    if not path or not os.path.exists(path):
        return None
    tot = 0.0
    for line in open(path):
        pid = line.strip()
        if pid:
            try:
                tot += proc_cpu_s(pid)
            except OSError:
                return None
    return tot


def to_task_ins(workload_id, tasks):
    out = []
    for node_id, task in tasks.items():
        task.MergeFrom(task_pb2.Task(
            producer=node_pb2.Node(node_id=0, anonymous=True),
            consumer=node_pb2.Node(node_id=node_id, anonymous=False)))
        out.append(task_pb2.TaskIns(task_id="", group_id="", workload_id=workload_id, task=task))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--example-dir", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--poll-s", type=float, default=0.5)
    ap.add_argument("--stage-timeout-s", type=float, default=120.0)
    ap.add_argument("--nodes-timeout-s", type=float, default=300.0)
    a = ap.parse_args()

    sys.path.insert(0, a.example_dir)
    import workflows  # Flower's examples/secaggplus-mt/workflows.py

    workflows.LOG_EXPLAIN = False
    factory = workflows.get_workflow_factory()
    config = dict(workflows._secure_aggregation_configuration)

    parameters = ndarrays_to_parameters([np.zeros(a.dim, dtype=np.float32)])
    driver = GrpcDriver(driver_service_address=a.driver, certificates=None)
    driver.connect()
    workload_id = driver.create_workload(req=driver_pb2.CreateWorkloadRequest()).workload_id

    out = open(a.out, "w")
    out.write(json.dumps({"config": {k: v for k, v in config.items()}, "clients": a.clients,
                          "dim": a.dim, "poll_s": a.poll_s,
                          "stage_timeout_s": a.stage_timeout_s}) + "\n")
    out.flush()
    t_nodes = time.perf_counter()
    while True:
        nodes = [n.node_id for n in
                 driver.get_nodes(req=driver_pb2.GetNodesRequest(workload_id=workload_id)).nodes]
        if len(nodes) >= a.clients:
            break
        if time.perf_counter() - t_nodes > a.nodes_timeout_s:
            print(f"driver: only {len(nodes)} of {a.clients} nodes after {a.nodes_timeout_s} s",
                  file=sys.stderr)
            sys.exit(1)
        time.sleep(1.0)

    t_prev = c_prev = s_prev = None
    for rnd in range(1, a.rounds + 1):
        sampled = random.sample(nodes, a.clients)
        time.sleep(a.poll_s)
        t0, c0, s0 = time.perf_counter(), time.process_time(), proc_cpu_s(a.server_pid)
        workflow = factory(parameters, sampled)
        messages = None
        compute, compute_cpu, stages, results = [], [], [], []
        while True:
            w0, k0 = time.perf_counter(), time.process_time()
            try:
                instructions = workflow.send(messages)
                next(workflow)
            except StopIteration:
                compute.append(time.perf_counter() - w0)
                compute_cpu.append(time.process_time() - k0)
                break
            compute.append(time.perf_counter() - w0)
            compute_cpu.append(time.process_time() - k0)
            p0 = time.perf_counter()
            pushed = driver.push_task_ins(req=driver_pb2.PushTaskInsRequest(
                task_ins_list=to_task_ins(workload_id, instructions)))
            time.sleep(a.poll_s)
            task_ids = [t for t in pushed.task_ids if t != ""]
            got = []
            while time.perf_counter() - p0 < a.stage_timeout_s:
                res = driver.pull_task_res(req=driver_pb2.PullTaskResRequest(
                    node=node_pb2.Node(node_id=0, anonymous=True), task_ids=task_ids))
                got += list(res.task_res_list)
                if len(got) == len(task_ids):
                    break
                time.sleep(a.poll_s)
            stages.append(time.perf_counter() - p0)
            results.append(len(got))
            messages = {r.task.producer.node_id: r.task for r in got if r.task.HasField("sa")}
        workflow.close()
        t1, c1, s1 = time.perf_counter(), time.process_time(), proc_cpu_s(a.server_pid)
        base_t, base_c, base_s = (t_prev, c_prev, s_prev) if t_prev is not None else (t0, c0, s0)
        rec = {
            "round": rnd,
            "round_s": t1 - t0,
            "gap_s": (t1 - t_prev) if t_prev is not None else None,
            "stage_s": stages,
            "compute_s": compute,
            "compute_cpu_s": compute_cpu,
            "agg_unmask_s": sum(compute[3:5]) if len(compute) >= 5 else None,
            "agg_unmask_cpu_s": sum(compute_cpu[3:5]) if len(compute_cpu) >= 5 else None,
            "results": results,
            "server_cpu_s": s1 - base_s,
            "driver_cpu_s": c1 - base_c,
            "server_cpu_total_s": (s1 - base_s) + (c1 - base_c),
            "interval_s": t1 - base_t,
            "hwm_mib": hwm_mib(a.server_pid) + hwm_mib(),
            "server_hwm_mib": hwm_mib(a.server_pid),
            "driver_hwm_mib": hwm_mib(),
            "clients_cpu_s": clients_cpu_s(),
            "wall_clock": time.time(),
        }
        out.write(json.dumps(rec) + "\n")
        out.flush()
        t_prev, c_prev, s_prev = t1, c1, s1
        time.sleep(a.poll_s)
    driver.disconnect()
    out.write(json.dumps({"end": True, "hwm_mib": hwm_mib(a.server_pid) + hwm_mib(),
                          "server_hwm_mib": hwm_mib(a.server_pid),
                          "driver_hwm_mib": hwm_mib()}) + "\n")
    out.close()


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    main()
