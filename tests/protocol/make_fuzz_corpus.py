#!/usr/bin/python3
"""Writes the seed corpora of the protocol fuzz targets.

    /usr/bin/python3 tests/protocol/make_fuzz_corpus.py

tests/fuzz/corpus/envelope/ gets shoal.Envelope encodings, written by a
small protobuf encoder below (independent of protobuf-c, so the corpus also
checks the C decoder against a second implementation of the wire format):
"valid-*" files are messages shoal_envelope_decode must accept with
SHOAL_PEER_ANY, "bad-*" files one refusal each. test_corpus.c checks that
split. tests/fuzz/corpus/chunk/ gets chunk_fuzz programs (see
tests/fuzz/chunk_fuzz.c for the format). Deterministic; rerunning rewrites
the same files and leaves others (inputs saved by fuzzing runs) alone.
Standard library only.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "fuzz", "corpus")


# ---- protobuf wire format -------------------------------------------------

def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def u(field, n):  # varint field (uint32/uint64/int64/bool/enum)
    return key(field, 0) + varint(n)


def ld(field, payload):  # length-delimited
    if isinstance(payload, str):
        payload = payload.encode()
    return key(field, 2) + varint(len(payload)) + payload


def f32(field, x):
    return key(field, 5) + struct.pack("<f", x)


def f64(field, x):
    return key(field, 1) + struct.pack("<d", x)


def packed(field, values):
    return ld(field, b"".join(varint(v) for v in values))


# Envelope body field numbers.
CHECK_IN, CHECK_IN_RESULT, MODEL_CHUNK, REPORT_CHUNK, REPORT, REPORT_ACK, ABORT = range(1, 8)


def window(lo, hi):
    return u(1, lo) + u(2, hi)


def capabilities(encodings=(1,)):
    return u(1, 64 << 20) + packed(2, encodings) + u(3, 1)


def check_in(version=1, drop=()):
    fields = {
        "version": u(1, version),
        "population": ld(2, "keyboard-next-word"),
        "token": ld(3, b"population-token"),
        "sdk": ld(4, "shoal-device 0.1.0"),
        "caps": ld(5, capabilities()),
        "held": ld(6, b"ckpt-41"),
    }
    for name in drop:
        fields.pop(name)
    return ld(CHECK_IN, b"".join(fields.values()))


# Secure-aggregation body field numbers.
(SA_ADVERTISE, SA_KEYS, SA_SHARES, SA_INBOX, SA_MASKED, SA_REQUEST,
 SA_UNMASK) = range(16, 23)


def secure_aggregation(index=4, degree=6, threshold=4, bits=32, length=101771):
    return (u(1, 2) + u(2, 20) + u(3, index) + u(4, threshold) + u(5, degree) +
            ld(6, b"\x07" * 32) + ld(7, b"\x09" * 32) + u(8, bits) + u(9, length) +
            f32(10, 0.5) + u(11, 600) + u(12, 30000))


def plan(task=1, lr=0.05, secagg=None, max_examples=5000, l2_norm=2.5, report_unclipped=False):
    model = ld(1, "mlp") + packed(2, [1, 28, 28]) + u(3, 10) + u(4, 101770)
    opt = u(1, 2) + f32(2, lr) + f32(3, 0.9) + u(10, 2) + u(11, 32)
    sel = ld(1, "typed-words") + u(2, 1700000000000) + u(3, 1700600000000) + u(4, 500)
    lim = u(1, 120000) + u(2, 20) + u(3, max_examples)
    body = u(1, task) + ld(2, model) + ld(4, sel) + ld(5, lim) + u(6, 600000) + u(7, 1)
    if task == 1 and secagg is not None:
        body += ld(3, opt) + u(8, 3) + ld(9, secagg)
    elif task == 1:
        body += ld(3, opt) + u(8, 1)
    if task == 1 and l2_norm is not None:
        body += ld(10, f32(1, l2_norm))
    if report_unclipped:
        body += u(11, 1)
    return body


def accepted(task=1, lr=0.05, secagg=None, **plan_fields):
    acc = (ld(1, b"session-7f3a") + u(2, 42) + u(3, task) +
           ld(4, plan(task, lr, secagg, **plan_fields)) +
           u(5, 407080) + ld(6, b"ckpt-42") + ld(7, window(3600000, 7200000)))
    return ld(CHECK_IN_RESULT, ld(1, acc))


def rejected(lo=60000, hi=900000):
    rej = ld(1, window(lo, hi)) + u(2, 1) + ld(3, "round 42 is full")
    return ld(CHECK_IN_RESULT, ld(2, rej))


def model_chunk(offset=0, total=16, data=bytes(range(16))):
    return ld(MODEL_CHUNK, ld(1, b"ckpt-42") + u(2, offset) + u(3, total) + ld(4, data))


def report_chunk(offset=0, total=16, data=bytes(range(16))):
    return ld(REPORT_CHUNK, ld(1, b"session-7f3a") + u(2, offset) + u(3, total) + ld(4, data))


def report(outcome=1, metric=0.4375, byte_size=407080, unclipped=None):
    body = ld(1, b"session-7f3a") + u(2, outcome)
    if unclipped is not None:
        body += u(7, unclipped)
    if outcome == 1:
        body += u(3, 480)
        body += ld(5, u(1, 1) + u(2, 101770) + u(3, byte_size))
    body += ld(4, ld(1, "loss") + f64(2, metric)) + ld(4, ld(1, "accuracy") + f64(2, 0.8125))
    if outcome == 4:
        body += ld(6, "example store is corrupt")
    return ld(REPORT, body)


def report_ack(status=1, reason=None):
    body = ld(1, b"session-7f3a") + u(2, status)
    if reason is not None:
        body += u(3, reason) + ld(4, "update shape does not match the plan")
    return ld(REPORT_ACK, body + ld(5, window(3600000, 10800000)))


def abort(reason=16, version=None, with_window=True):
    body = u(1, reason) + ld(2, "server is shutting down")
    if with_window:
        body += ld(3, window(1000, 5000))
    if version is not None:
        body += ld(4, u(1, version) + u(2, 1) + u(3, 1))
    return ld(ABORT, body)


def sa_key(index, c=b"\x01" * 32, s=b"\x02" * 32):
    return u(1, index) + ld(2, c) + ld(3, s)


def sa_sealed(frm, to, size=184):
    return u(1, frm) + u(2, to) + ld(3, b"\xa5" * size)


def sa_shares(frm=3, tos=(1, 2, 7), size=184):
    return ld(SA_SHARES, ld(1, b"session-7f3a") +
              b"".join(ld(2, sa_sealed(frm, t, size)) for t in tos))


def sa_masked(offset=0, total=32, data=b"\x3c" * 16, bits=24, encoding=3, elements=8):
    info = u(1, encoding) + u(2, elements) + u(3, elements * (4 if encoding == 3 else 8)) + \
        u(5, bits)
    return ld(SA_MASKED, ld(1, b"session-7f3a") + ld(2, info) + u(3, offset) + u(4, total) +
              ld(5, data))


def sa_unmask(ofs=(1, 3), kinds=(1, 2), size=68):
    return ld(SA_UNMASK, ld(1, b"session-7f3a") + b"".join(
        ld(2, u(1, o) + u(2, k) + ld(3, b"\x11" * size)) for o, k in zip(ofs, kinds)))


ENVELOPE = {
    "valid-accepted-secagg-plus": accepted(secagg=secure_aggregation()),
    "valid-secagg-advertise": ld(SA_ADVERTISE, ld(1, b"session-7f3a") + ld(2, sa_key(4))),
    "valid-secagg-keys": ld(SA_KEYS, b"".join(ld(1, sa_key(i)) for i in (1, 2, 5))),
    "valid-secagg-shares": sa_shares(),
    "valid-secagg-inbox": ld(SA_INBOX, ld(1, sa_sealed(0, 3)) + ld(1, sa_sealed(2, 3))),
    "valid-secagg-masked-input": sa_masked(),
    "valid-secagg-masked-input-wide-ring": sa_masked(total=64, data=b"\x01" * 64, bits=48,
                                                     encoding=4),
    "valid-secagg-unmask-request": ld(SA_REQUEST, packed(1, [0, 2, 3])),
    "valid-secagg-unmask": sa_unmask(),
    "bad-secagg-field-23": ld(23, u(1, 1)),
    "valid-accepted-adaptive-clipping": accepted(report_unclipped=True),
    "valid-accepted-secagg-adaptive-clipping":
        accepted(secagg=secure_aggregation(length=101772), report_unclipped=True),
    "valid-report-unclipped": report(unclipped=1),
    "valid-check-in-adaptive-clipping":
        ld(CHECK_IN, u(1, 1) + ld(2, "p") + ld(3, b"t") + ld(4, "s") +
           ld(5, capabilities() + u(4, 1))),
    "bad-accepted-unclipped-without-bound": accepted(report_unclipped=True, l2_norm=None),
    "bad-accepted-secagg-adaptive-without-room":
        accepted(secagg=secure_aggregation(), report_unclipped=True),
    "bad-report-unclipped-interrupted": report(outcome=2, unclipped=0),
    "bad-accepted-secagg-index-outside-group": accepted(secagg=secure_aggregation(index=20)),
    "bad-accepted-secagg-odd-degree": accepted(secagg=secure_aggregation(degree=5)),
    "bad-accepted-secagg-threshold-above-degree":
        accepted(secagg=secure_aggregation(threshold=7)),
    "bad-accepted-secagg-vector-without-weight":
        accepted(secagg=secure_aggregation(length=101770)),
    "bad-accepted-secagg-wide-ring-narrow-encoding":
        accepted(secagg=secure_aggregation(bits=40)),
    "bad-secagg-advertise-truncated-key":
        ld(SA_ADVERTISE, ld(1, b"session-7f3a") + ld(2, sa_key(4, c=b"\x01" * 31))),
    "bad-secagg-advertise-same-keys":
        ld(SA_ADVERTISE, ld(1, b"session-7f3a") + ld(2, sa_key(4, s=b"\x01" * 32))),
    "bad-secagg-keys-replayed-index": ld(SA_KEYS, b"".join(ld(1, sa_key(i)) for i in (1, 2, 2))),
    "bad-secagg-keys-forged-index": ld(SA_KEYS, ld(1, sa_key(1000000))),
    "bad-secagg-shares-repeated-target": sa_shares(tos=(1, 2, 2)),
    "bad-secagg-shares-to-itself": sa_shares(tos=(1, 3)),
    "bad-secagg-shares-truncated": sa_shares(size=183),
    "bad-secagg-inbox-two-receivers": ld(SA_INBOX, ld(1, sa_sealed(0, 3)) + ld(1, sa_sealed(2, 4))),
    "bad-secagg-masked-past-end": sa_masked(offset=17),
    "bad-secagg-masked-total-mismatch": sa_masked(total=40),
    "bad-secagg-masked-float": sa_masked(encoding=1),
    "bad-secagg-masked-ring-too-wide": sa_masked(bits=33),
    "bad-secagg-unmask-request-one-survivor": ld(SA_REQUEST, packed(1, [3])),
    "bad-secagg-unmask-request-repeated": ld(SA_REQUEST, packed(1, [0, 2, 2])),
    "bad-secagg-unmask-two-shares-of-one": sa_unmask(ofs=(1, 1)),
    "bad-secagg-unmask-unknown-kind": sa_unmask(kinds=(1, 3)),
    "bad-secagg-unmask-truncated-share": sa_unmask(size=67),
    "valid-check-in": check_in(),
    "valid-check-in-two-encodings": ld(CHECK_IN, u(1, 1) + ld(2, "p") + ld(3, b"t") + ld(4, "s") +
                                       ld(5, capabilities((1, 2))) + ld(7, ld(1, b"old-session"))),
    "valid-accepted-train": accepted(),
    "valid-accepted-evaluate": accepted(task=2),
    "valid-rejected": rejected(),
    "valid-model-chunk": model_chunk(),
    "valid-model-chunk-middle": model_chunk(offset=1000, total=5000, data=b"\xab" * 300),
    "valid-report-chunk": report_chunk(),
    "valid-report-completed": report(),
    "valid-report-interrupted": report(outcome=2),
    "valid-report-insufficient-data": report(outcome=3),
    "valid-report-error": report(outcome=4),
    "valid-report-ack-accepted": report_ack(),
    "valid-report-ack-late": report_ack(status=2),
    "valid-report-ack-refused": report_ack(status=3, reason=9),
    "valid-report-ack-norm-exceeded": report_ack(status=3, reason=20),
    "valid-abort-server": abort(),
    "valid-abort-device": abort(reason=15, with_window=False),
    "valid-abort-version": abort(reason=5, version=7),
    "valid-unknown-field-in-check-in": ld(CHECK_IN, check_in()[2:] + u(99, 5)),
    "bad-empty": b"",
    "bad-truncated": check_in()[:-3],
    "bad-wire-type-7": b"\x0f",
    "bad-length-past-end": b"\x0a\x7f\x08\x01",
    "bad-future-body-8": ld(8, b""),
    "bad-check-in-version-2": check_in(version=2),
    "bad-check-in-no-version": check_in(drop=("version",)),
    "bad-check-in-no-population": check_in(drop=("population",)),
    "bad-check-in-no-capabilities": check_in(drop=("caps",)),
    "bad-check-in-unknown-encoding": ld(CHECK_IN, u(1, 1) + ld(2, "p") + ld(3, b"t") + ld(4, "s") +
                                        ld(5, capabilities((1, 9)))),
    "bad-accepted-nan-learning-rate": accepted(lr=float("nan")),
    "bad-accepted-zero-max-examples": accepted(max_examples=0),
    "bad-accepted-max-examples-below-min": accepted(max_examples=19),
    "bad-accepted-zero-update-bound": accepted(l2_norm=0.0),
    "bad-accepted-nan-update-bound": accepted(l2_norm=float("nan")),
    "bad-accepted-negative-learning-rate": accepted(lr=-1.0),
    "bad-rejected-inverted-window": rejected(lo=10, hi=9),
    "bad-rejected-window-over-a-week": rejected(hi=604800001),
    "bad-result-empty": ld(CHECK_IN_RESULT, b""),
    "bad-model-chunk-past-total": model_chunk(offset=10, total=16),
    "bad-model-chunk-empty-data": model_chunk(data=b""),
    "bad-model-chunk-offset-overflow": model_chunk(offset=(1 << 64) - 4, total=(1 << 64) - 1),
    "bad-report-chunk-zero-total": report_chunk(total=0),
    "bad-report-nan-metric": report(metric=float("nan")),
    "bad-report-wrong-byte-size": report(byte_size=101770),
    "bad-report-unspecified-outcome": report(outcome=0),
    "bad-report-ack-refused-without-reason": report_ack(status=3),
    "bad-abort-version-without-versions": abort(reason=5),
    "bad-abort-unknown-reason": abort(reason=99),
}


# ---- chunk_fuzz programs ----------------------------------------------------
# Header: max_total (u16 LE), max_chunk - 1 (u8), max_chunks - 1 (u8),
# split_chunk - 1 (u8). Then records: flags (u8), offset (u16 LE),
# total (u16 LE), len (u8); the chunk's bytes follow the record. Flags bit 0
# adds 2^64 - 2^16 to offset, bit 1 to total.

def program(max_total, max_chunk, max_chunks, split, records):
    out = struct.pack("<HBBB", max_total, max_chunk - 1, max_chunks - 1, split - 1)
    for flags, offset, total, data in records:
        out += struct.pack("<BHHB", flags, offset, total, len(data)) + data
    return out


def seq(total, step, start=0, seed=0):
    recs = []
    off = start
    while off < total:
        n = min(step, total - off)
        recs.append((0, off, total, bytes((seed + off + i) & 0xFF for i in range(n))))
        off += n
    return recs


CHUNK = {
    "valid-one-chunk": program(100, 64, 4, 7, seq(40, 40)),
    "valid-many-chunks": program(1000, 32, 64, 13, seq(700, 32)),
    "valid-uneven-last": program(1000, 50, 16, 50, seq(333, 50)),
    "valid-byte-by-byte": program(64, 1, 200, 1, seq(20, 1)),
    "bad-gap": program(100, 16, 10, 5, [(0, 0, 50, b"a" * 10), (0, 12, 50, b"b" * 5)]),
    "bad-overlap": program(100, 16, 10, 5, [(0, 0, 50, b"a" * 10), (0, 8, 50, b"b" * 5)]),
    "bad-total-change": program(100, 16, 10, 5, [(0, 0, 50, b"a" * 10), (0, 10, 51, b"b" * 5)]),
    "bad-past-total": program(100, 16, 10, 5, [(0, 0, 12, b"a" * 10), (0, 10, 12, b"b" * 5)]),
    "bad-empty-chunk": program(100, 16, 10, 5, [(0, 0, 50, b"")]),
    "bad-zero-total": program(100, 16, 10, 5, [(0, 0, 0, b"a")]),
    "bad-total-over-limit": program(100, 16, 10, 5, [(0, 0, 101, b"a" * 10)]),
    "bad-chunk-over-limit": program(100, 16, 10, 5, [(0, 0, 50, b"a" * 17)]),
    "bad-too-many-chunks": program(100, 16, 2, 5, seq(50, 10)),
    "bad-offset-overflow": program(100, 16, 10, 5, [(3, 0xFFF0, 0xFFFF, b"a" * 16)]),
    "bad-after-complete": program(100, 16, 10, 5, seq(10, 10) + [(0, 10, 10, b"x")]),
    "resume-after-rejected": program(100, 16, 10, 5, [(0, 0, 30, b"a" * 10), (0, 15, 30, b"b" * 5),
                                                     (0, 10, 30, b"c" * 16), (0, 26, 30, b"d" * 4)]),
}


def write(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main():
    write(os.path.join(CORPUS, "envelope"), ENVELOPE)
    write(os.path.join(CORPUS, "chunk"), CHUNK)
    print(f"wrote {len(ENVELOPE)} envelope and {len(CHUNK)} chunk seeds under {CORPUS}")


if __name__ == "__main__":
    main()
