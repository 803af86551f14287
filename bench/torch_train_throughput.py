#!/usr/bin/python3
"""PyTorch baseline for bench/train_throughput: the same workload, same line format.

One epoch of mini-batch SGD (lr 0.01, no momentum) over Fashion-MNIST with
the same architectures as Shoal's mlp (784-200-200-10) and cnn (conv6@5,
pool, conv16@5, pool, 120, 84, 10). Like shoal_trainer_epoch, the whole
training set is preloaded (standardised) as one float tensor, indices are
shuffled once per epoch, and each step gathers its batch by index.

Threads: torch.set_num_threads(T) sizes PyTorch's OpenMP pool (used by its
own kernels and oneDNN convolutions); Debian's torch calls OpenBLAS for
GEMM, which has a separate pthread pool, so openblas_set_num_threads(T) is
called on the OpenBLAS that torch loaded. Inter-op threads are 1.

Run it with /usr/bin/python3 (Debian's python3-torch).
"""

import argparse
import ctypes
import gzip
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"


def die(msg):
    sys.exit(f"torch_train_throughput: {msg}")


def read_idx(path):
    """Reads an unsigned-byte IDX file, gzip-compressed or plain."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        die(f"{path}: not an unsigned-byte IDX file")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        die(f"{path}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims)


def find_idx(data_dir, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    die(f"{data_dir}: neither {stem}.gz nor {stem} exists")


def load_train(data_dir):
    images = read_idx(find_idx(data_dir, "train-images-idx3-ubyte"))
    labels = read_idx(find_idx(data_dir, "train-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    # Standardised with the training set's mean and standard deviation, as
    # the Shoal side does (shoal_dataset_stats + shoal_dataset_normalize).
    mean, std = x.mean(), x.std(unbiased=False)
    x = ((x - mean) / std).unsqueeze(1).contiguous()  # [n, 1, 28, 28]
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def make_model(name):
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 200), nn.ReLU(),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10))
    die(f"--model: unknown model '{name}' (choose mlp or cnn)")


def openblas_set_threads(threads):
    """Sets the pool size of the OpenBLAS torch loaded; returns its path."""
    path = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "libopenblas" in os.path.basename(fields[5]):
                path = fields[5]
                break
    try:
        lib = ctypes.CDLL(path or "libopenblas.so.0")
    except OSError:
        return None
    if not hasattr(lib, "openblas_set_num_threads"):
        return None
    lib.openblas_set_num_threads(ctypes.c_int(threads))
    return path or "libopenblas.so.0"


def train_epoch(model, opt, loss_fn, x, y, examples, batch, generator):
    order = torch.randperm(examples, generator=generator)
    loss_sum = 0.0
    for start in range(0, examples, batch):
        idx = order[start:start + batch]
        xb = x.index_select(0, idx)
        yb = y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * idx.numel()
    return loss_sum / examples


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=60000)
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for flag in ("batch", "threads", "repeats", "examples"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} must be at least 1")

    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    blas = openblas_set_threads(args.threads)
    if blas is None:
        print("torch_train_throughput: warning: OpenBLAS not found in the process; "
              "its thread count is not set", file=sys.stderr)

    x, y = load_train(args.data_dir)
    if args.examples > x.shape[0]:
        die(f"--examples {args.examples}: the training set holds only {x.shape[0]}")
    if args.model == "mlp":
        x = x.reshape(x.shape[0], -1).contiguous()
    x, y = x[:args.examples].contiguous(), y[:args.examples].contiguous()

    torch.manual_seed(args.seed)
    model = make_model(args.model)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.0)
    generator = torch.Generator().manual_seed(args.seed)

    if args.warmup_steps:
        warm = min(args.warmup_steps * args.batch, args.examples)
        train_epoch(model, opt, loss_fn, x, y, warm, args.batch, generator)

    prefix = (f"impl=torch model={args.model} batch={args.batch} threads={args.threads} "
              f"examples={args.examples}")
    times, rates = [], []
    for r in range(args.repeats):
        model.load_state_dict(initial)  # every repeat starts from the same model
        t0 = time.perf_counter()
        loss = train_epoch(model, opt, loss_fn, x, y, args.examples, args.batch, generator)
        seconds = time.perf_counter() - t0
        times.append(seconds)
        rates.append(args.examples / seconds)
        print(f"{prefix} repeat={r + 1} seconds={seconds:.4f} ex_per_s={rates[-1]:.1f} "
              f"loss={loss:.4f}", flush=True)
    print(f"{prefix} repeat=median seconds={statistics.median(times):.4f} "
          f"ex_per_s={statistics.median(rates):.1f}", flush=True)


if __name__ == "__main__":
    main()
