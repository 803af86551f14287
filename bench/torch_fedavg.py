#!/usr/bin/python3
"""Plain PyTorch FedAvg on Fashion-MNIST: the baseline for bench/sim_vs_torch.

The McMahan et al. 2017 setting, written the way a PyTorch user would: the
2NN mlp (784-200-200-10, ReLU), the training set split iid among --clients
clients with a seeded permutation, each round --clients-per-round clients
sampled without replacement, each starting from the global model
(load_state_dict) and running --local-epochs epochs of torch.optim.SGD
(no momentum) with batch --batch over its own data, shuffled every epoch;
the server takes the mean of the client state dicts weighted by example
count (FedAvg with server learning rate 1) and evaluates on the 10k test set
every round.

Inputs are standardised with the training set's mean and standard deviation
(0.2860 / 0.3530 for Fashion-MNIST), computed from the data.

Batches are gathered by indexing one preloaded tensor (the fast way);
--dataloader uses torch.utils.data.DataLoader over a Subset instead, as
many tutorials do (slower: a Python __getitem__ and a collate per batch).

Threads: torch.set_num_threads(T), set_num_interop_threads(1), and the pool
of the OpenBLAS torch loaded (Debian's torch calls it for GEMM) set through
openblas_set_num_threads(T).

Prints one line per round, then wall_s=... (from before loading the data to
the end; interpreter start and `import torch` are not included) and
final_test_accuracy=...

Run it with /usr/bin/python3 (Debian's python3-torch).
"""

import argparse
import copy
import ctypes
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(data_dir, stem):
    """Reads an unsigned-byte IDX file (stem.gz or stem) as a numpy array."""
    for name, opener in ((stem + ".gz", gzip.open), (stem, open)):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            with opener(path, "rb") as f:
                raw = f.read()
            break
    else:
        sys.exit(f"{data_dir}: neither {stem}.gz nor {stem} exists")
    if len(raw) < 4 or raw[:3] != b"\0\0\x08":
        sys.exit(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def load(data_dir):
    def images(stem):
        x = read_idx(data_dir, stem).astype(np.float32) / 255.0
        return torch.from_numpy(x.reshape(x.shape[0], -1))

    def labels(stem):
        return torch.from_numpy(read_idx(data_dir, stem).astype(np.int64))

    x_train, x_test = images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")
    mean, std = x_train.mean().item(), x_train.std(unbiased=False).item()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return (x_train, labels("train-labels-idx1-ubyte"),
            x_test, labels("t10k-labels-idx1-ubyte"), mean, std)


def openblas_set_threads(threads):
    """Sets the pool size of the OpenBLAS torch loaded; returns its path or None."""
    with open("/proc/self/maps") as maps:
        paths = [f[5] for f in (line.split() for line in maps)
                 if len(f) >= 6 and "libopenblas" in os.path.basename(f[5])]
    if not paths:
        return None
    lib = ctypes.CDLL(paths[0])
    if not hasattr(lib, "openblas_set_num_threads"):
        return None
    lib.openblas_set_num_threads(ctypes.c_int(threads))
    return paths[0]


def make_mlp():
    return nn.Sequential(nn.Linear(784, 200), nn.ReLU(),
                         nn.Linear(200, 200), nn.ReLU(),
                         nn.Linear(200, 10))


def train_client(model, x, y, args, generator):
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.0)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    if args.dataloader:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                             batch_size=args.batch, shuffle=True,
                                             generator=generator)
    for _ in range(args.local_epochs):
        if args.dataloader:
            batches = loader
        else:
            order = torch.randperm(x.shape[0], generator=generator)
            batches = ((x[idx], y[idx]) for idx in order.split(args.batch))
        for xb, yb in batches:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()


@torch.no_grad()
def test_accuracy(model, x, y):
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--dataloader", action="store_true",
                    help="batch with torch.utils.data.DataLoader instead of tensor indexing")
    ap.add_argument("--quiet", action="store_true", help="no per-round lines")
    args = ap.parse_args()
    for flag in ("rounds", "clients", "clients_per_round", "local_epochs", "batch", "threads"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.clients_per_round > args.clients:
        ap.error("--clients-per-round must not exceed --clients")

    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    if openblas_set_threads(args.threads) is None:
        print("torch_fedavg: warning: OpenBLAS not found in the process; "
              "its thread count is not set", file=sys.stderr)

    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test, mean, std = load(args.data_dir)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    shards = torch.randperm(x_train.shape[0], generator=generator).tensor_split(args.clients)
    client_data = [(x_train[s], y_train[s]) for s in shards]

    global_model = make_mlp()
    local_model = copy.deepcopy(global_model)
    if not args.quiet:
        print(f"torch_fedavg: mlp, {args.clients} clients (iid), {args.rounds} rounds, "
              f"{args.clients_per_round} per round, {args.local_epochs} local epochs, "
              f"batch {args.batch}, lr {args.lr}, {args.threads} threads, "
              f"mean {mean:.4f} std {std:.4f}", flush=True)
    accuracy = float("nan")
    for rnd in range(1, args.rounds + 1):
        chosen = torch.randperm(args.clients, generator=generator)[:args.clients_per_round]
        global_state = global_model.state_dict()
        sums = {k: torch.zeros_like(v) for k, v in global_state.items()}
        total = 0
        for c in chosen.tolist():
            x, y = client_data[c]
            local_model.load_state_dict(global_state)
            train_client(local_model, x, y, args, generator)
            for k, v in local_model.state_dict().items():
                sums[k].add_(v, alpha=x.shape[0])
            total += x.shape[0]
        global_model.load_state_dict({k: v / total for k, v in sums.items()})
        accuracy = test_accuracy(global_model, x_test, y_test)
        if not args.quiet:
            print(f"round {rnd} test_acc {accuracy:.4f} wall {time.perf_counter() - t0:.1f}s",
                  flush=True)
    print(f"wall_s={time.perf_counter() - t0:.3f}")
    print(f"final_test_accuracy={accuracy:.4f}")


if __name__ == "__main__":
    main()
