#!/usr/bin/env python3
"""Generates server_optim.exp, the known-answer vectors for Shoal's server
optimizers (tests/ml/test_server_optim.c).

This is a second, independent implementation of the update rules documented
in ml/include/shoal/optim.h, in float64, standard library only:

  Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2,
  with the server learning rate eta and the averaged client delta d:
    fedavg      x += eta * d
    fedavgm     m = beta*m + d;  x += eta * m                 (Hsu et al. 2019)
    fedadagrad  m = b1*m + (1-b1)*d;  v = v + d^2
    fedadam     m = b1*m + (1-b1)*d;  v = b2*v + (1-b2)*d^2
    fedyogi     m = b1*m + (1-b1)*d;  v = v - (1-b2)*d^2*sign(v - d^2)
    adaptive    x += eta * m / (sqrt(v) + tau)
  m starts at 0, v starts at tau^2 (the paper's v_{-1} >= tau^2), and there
  is no bias correction.

Shoal keeps hyperparameters, parameters and deltas in float32, so every
input is first rounded to the nearest float32 and written out exactly; the
expected values are the float64 results from those inputs. The C test reads
the inputs with strtod (exact) and compares with a float tolerance.

Usage: /usr/bin/python3 tests/vectors/gen_server_optim.py > tests/vectors/server_optim.exp
"""

import math
import struct
import sys


def f32(value):
    """Rounds a Python float to the nearest float32 value."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def fmt(value):
    # repr is the shortest string that round-trips a float64 exactly.
    return repr(float(value))


DEFAULTS = {
    "fedavg": dict(lr=1.0),
    "fedavgm": dict(lr=1.0),
    "fedadagrad": dict(lr=0.01),
    "fedadam": dict(lr=0.01),
    "fedyogi": dict(lr=0.01),
}


def run(kind, hp, x0, deltas):
    eta, beta = hp["lr"], hp["momentum"]
    b1, b2, tau = hp["beta1"], hp["beta2"], hp["tau"]
    x = list(x0)
    n = len(x)
    m = [0.0] * n
    v = [tau * tau] * n
    out = []
    for d in deltas:
        for i in range(n):
            if kind == "fedavg":
                x[i] = x[i] + eta * d[i]
                continue
            if kind == "fedavgm":
                m[i] = beta * m[i] + d[i]
                x[i] = x[i] + eta * m[i]
                continue
            m[i] = b1 * m[i] + (1.0 - b1) * d[i]
            d2 = d[i] * d[i]
            if kind == "fedadagrad":
                v[i] = v[i] + d2
            elif kind == "fedadam":
                v[i] = b2 * v[i] + (1.0 - b2) * d2
            elif kind == "fedyogi":
                diff = v[i] - d2
                # The C code computes sign(v - d^2) in float32: keep every
                # vector far from the tie so both sides agree on the sign.
                if diff != 0.0 and abs(diff) < 1e-3 * max(v[i], d2):
                    sys.exit("gen_server_optim: yogi sign too close to a tie, pick other deltas")
                sign = 1.0 if diff > 0.0 else -1.0 if diff < 0.0 else 0.0
                v[i] = v[i] - (1.0 - b2) * d2 * sign
            else:
                sys.exit("gen_server_optim: unknown kind " + kind)
            x[i] = x[i] + eta * m[i] / (math.sqrt(v[i]) + tau)
        out.append(list(x))
    return out


# (name, kind, hyperparameter overrides, x0, three deltas). Unlisted
# hyperparameters take Shoal's documented defaults.
VECTORS = [
    ("fedavg_default", "fedavg", {},
     [0.5, -1.25, 2.0, 0.0],
     [[0.1, -0.2, 0.3, 0.0], [-0.05, 0.4, 0.0, 1.5], [0.25, 0.25, -0.75, -2.0]]),
    ("fedavg_half_lr", "fedavg", dict(lr=0.5),
     [1.0, 2.0, -3.0],
     [[0.3, -0.7, 0.11], [0.3, 0.2, -0.9], [-1.3, 0.05, 0.6]]),
    ("fedavgm_default", "fedavgm", {},
     [0.5, -1.25, 2.0, 0.0],
     [[0.1, -0.2, 0.3, 0.0], [-0.05, 0.4, 0.0, 1.5], [0.25, 0.25, -0.75, -2.0]]),
    ("fedavgm_custom", "fedavgm", dict(lr=0.75, momentum=0.5),
     [1.0, 2.0, -3.0],
     [[0.3, -0.7, 0.11], [0.3, 0.2, -0.9], [-1.3, 0.05, 0.6]]),
    ("fedadagrad_default", "fedadagrad", {},
     [0.5, -1.25, 2.0, 0.0],
     [[0.1, -0.2, 0.3, 0.0], [-0.05, 0.4, 0.0, 1.5], [0.25, 0.25, -0.75, -2.0]]),
    ("fedadagrad_custom", "fedadagrad", dict(lr=0.3, beta1=0.6, tau=0.1),
     [1.0, 2.0, -3.0],
     [[0.3, -0.7, 0.01], [0.3, 0.2, -0.9], [-1.3, 0.05, 0.6]]),
    ("fedadam_default", "fedadam", {},
     [0.5, -1.25, 2.0, 0.0],
     [[0.1, -0.2, 0.3, 0.0], [-0.05, 0.4, 0.0, 1.5], [0.25, 0.25, -0.75, -2.0]]),
    ("fedadam_custom", "fedadam", dict(lr=0.3, beta1=0.6, beta2=0.8, tau=0.1),
     [1.0, 2.0, -3.0],
     [[0.3, -0.7, 0.01], [0.3, 0.2, -0.9], [-1.3, 0.05, 0.6]]),
    ("fedyogi_default", "fedyogi", {},
     [0.5, -1.25, 2.0, 0.0],
     [[1.0, -0.2, 0.3, 0.0], [0.05, 0.4, 0.02, 1.5], [-0.5, 0.01, -0.75, -2.0]]),
    ("fedyogi_custom", "fedyogi", dict(lr=0.3, beta1=0.6, beta2=0.8, tau=0.1),
     [1.0, 2.0, -3.0],
     [[0.3, -0.7, 0.01], [0.1, 0.2, -0.9], [-1.3, 0.05, 0.6]]),
    # tau^2 = 0.25 = 0.5^2 exactly: sign(v - d^2) is 0 in the first column,
    # which must leave v alone.
    ("fedyogi_exact_tie", "fedyogi", dict(lr=0.5, tau=0.5),
     [0.0, 1.0, -1.0],
     [[0.5, 0.125, 2.0], [-0.5, -0.25, 1.0], [0.5, 3.0, -0.0625]]),
]

HEADER = """\
# Known-answer vectors for Shoal's server optimizers
# (tests/ml/test_server_optim.c). Generated by gen_server_optim.py, an
# independent float64 implementation of Reddi et al. 2021, Algorithm 2, as
# documented in ml/include/shoal/optim.h; regenerate with
#   /usr/bin/python3 tests/vectors/gen_server_optim.py > tests/vectors/server_optim.exp
#
# Format: one record per line, `key value...`, separated by blanks; lines
# starting with '#' and blank lines are ignored. A vector is
#   vector <name>
#   kind <fedavg|fedavgm|fedadagrad|fedadam|fedyogi>
#   lr <eta>
#   momentum <beta>        (fedavgm)
#   beta1 <b1>
#   beta2 <b2>
#   tau <tau>
#   x0 <x_1> ... <x_n>     initial parameters
#   then three times:
#   delta <d_1> ... <d_n>  averaged client delta
#   x <x_1> ... <x_n>      expected parameters after applying it
#   end
# Inputs (hyperparameters, x0, deltas) are float32 values written exactly;
# expected x values are float64 results.
"""


def main():
    out = [HEADER]
    for name, kind, overrides, x0, deltas in VECTORS:
        hp = dict(lr=DEFAULTS[kind]["lr"], momentum=0.9, beta1=0.9, beta2=0.99, tau=1e-3)
        hp.update(overrides)
        hp = {k: f32(v) for k, v in hp.items()}
        x0 = [f32(v) for v in x0]
        deltas = [[f32(v) for v in d] for d in deltas]
        assert all(len(d) == len(x0) for d in deltas)
        expected = run(kind, hp, x0, deltas)
        out.append("vector " + name)
        out.append("kind " + kind)
        for key in ("lr", "momentum", "beta1", "beta2", "tau"):
            out.append(key + " " + fmt(hp[key]))
        out.append("x0 " + " ".join(fmt(v) for v in x0))
        for d, x in zip(deltas, expected):
            out.append("delta " + " ".join(fmt(v) for v in d))
            out.append("x " + " ".join(fmt(v) for v in x))
        out.append("end")
        out.append("")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
