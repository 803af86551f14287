"""Flower 1.6.0 SecAgg+ clients for the Shoal/Flower comparison (harness
code, not Flower's). Usage:

  flower_secagg_client.py --server 127.0.0.1:P --threads K

Runs K clients as threads of this process, each fl.client.start_client
over gRPC request-response (insecure, as Flower's examples/secaggplus-mt
does) with a client that is a Client and a SecAggPlusHandler, as that
example's client.py is. fit() returns the received parameters + 0.001 with
example count 1: trivial "training", so a round measures the protocol,
the transport and the servers. Unlike the example's client, no client
sleeps to simulate a dropout.

Each client gets its own TCP connection (its channel its own subchannel
pool), as separate devices would have.
"""
import argparse
import os
import sys
import threading
import time

import grpc
import numpy as np

_orig_insecure_channel = grpc.insecure_channel


def _insecure_channel(target, options=None, compression=None):
    opts = list(options or []) + [("grpc.use_local_subchannel_pool", 1)]
    return _orig_insecure_channel(target, options=opts, compression=compression)


grpc.insecure_channel = _insecure_channel

import flwr as fl  # noqa: E402  (after the patch above)
from flwr.client.secure_aggregation import SecAggPlusHandler  # noqa: E402
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

INC = np.float32(0.001)


class PlusClient(fl.client.Client, SecAggPlusHandler):
    def fit(self, ins):
        params = [p.astype(np.float32) + INC for p in parameters_to_ndarrays(ins.parameters)]
        return FitRes(status=Status(code=Code.OK, message="ok"),
                      parameters=ndarrays_to_parameters(params), num_examples=1, metrics={})


def run_one(server, errors):
    try:
        fl.client.start_client(server_address=server, client=PlusClient(), transport="grpc-rere")
    except Exception as exc:  # recorded; the process exit status says so
        errors.append(repr(exc))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    errors = []
    ths = [threading.Thread(target=run_one, args=(a.server, errors), daemon=True)
           for _ in range(a.threads)]
    for t in ths:
        t.start()
        time.sleep(0.005)
    for t in ths:
        t.join()
    if errors:
        print(f"flower_secagg_client: {len(errors)} client threads failed; first: {errors[0]}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    main()
