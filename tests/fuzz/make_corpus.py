#!/usr/bin/python3
"""Writes the seed corpora for the fuzz targets in tests/fuzz/.

    /usr/bin/python3 tests/fuzz/make_corpus.py

corpus/idx/ gets small IDX files (valid ones of rank 1 to 4 and malformed
ones, one per error shoal_idx_parse reports); corpus/csv/ gets small CSV
texts (header, CRLF, blank lines, missing final newline, and one per error
shoal_dataset_parse_csv reports). File names say what each input is. The
output is deterministic; rerunning rewrites the same files and leaves other
files alone (inputs saved from fuzzing runs). The generated files are
committed: the standalone replayers (meson test --suite fuzz) read them.
Standard library only.
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def idx(dims, data=None, type_code=0x08, rank=None):
    """An IDX file: 0x0000, type, rank, big-endian u32 dims, then the data
    (by default the bytes 0, 1, 2, ... of the size the dims describe)."""
    if rank is None:
        rank = len(dims)
    if data is None:
        count = 1
        for d in dims:
            count *= d
        data = bytes(i * 37 % 256 for i in range(count))
    header = bytes([0, 0, type_code, rank]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + data


IDX = {
    # valid, rank 1 to 4
    "valid-rank1-labels": idx([10], bytes([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])),
    "valid-rank1-one-byte": idx([1], b"\x07"),
    "valid-rank2-3x4": idx([3, 4]),
    "valid-rank3-images-2x3x3": idx([2, 3, 3]),
    "valid-rank3-images-1x28x28": idx([1, 28, 28]),
    "valid-rank4-2x1x2x2": idx([2, 1, 2, 2]),
    "valid-rank4-1x3x2x2": idx([1, 3, 2, 2]),
    # malformed
    "bad-empty": b"",
    "bad-short-magic": b"\x00\x00\x08",
    "bad-magic": b"\x12\x34\x08\x01\x00\x00\x00\x01\x00",
    "bad-gzip-not-unpacked": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
    "bad-type-float": idx([2], b"\x00" * 8, type_code=0x0D),
    "bad-type-int": idx([2], b"\x00" * 8, type_code=0x0C),
    "bad-rank0": bytes([0, 0, 8, 0]),
    "bad-rank5": idx([1, 1, 1, 1, 1], b"\x00"),
    "bad-zero-dim": idx([2, 0, 3], b""),
    "bad-truncated-header": idx([2, 3, 3])[:9],
    "bad-truncated-data": idx([2, 3, 3])[:-1],
    "bad-trailing-byte": idx([2, 3, 3]) + b"\xff",
    "bad-huge-dims": idx([0xFFFFFFFF, 0xFFFFFFFF], b"\x00" * 4),
    "bad-dims-over-limit": idx([0x10000, 0x10000, 2], b"\x00" * 4),
    "bad-header-only": idx([3], b""),
}


CSV = {
    # valid
    "valid-plain": b"0,0.5,1.5\n1,2,3\n2,-1,4e-3\n",
    "valid-header": b"label,x1,x2\n1,0.25,0.75\n0,1,0\n",
    "valid-crlf": b"label,a,b\r\n0,1.0,2.0\r\n1,3.0,4.0\r\n",
    "valid-blank-lines": b"\n0,1\n\n  \n1,2\n\t\r\n2,3\n\n",
    "valid-no-final-newline": b"0,1,2\n1,3,4",
    "valid-one-row": b"0,42\n",
    "valid-spaces-around": b" 1 , 2.5 ,\t-3 \n 0,1e2,  .5\n",
    "valid-labels-0-to-2": b"0,1\n1,1\n2,1\n",
    "valid-wide-row": b"1," + b",".join(b"%d" % i for i in range(64)) + b"\n",
    "valid-hex-and-exponent": b"0,0x1p-3,1E+2\n1,-0,+7\n",
    "valid-header-then-blank": b"y,x\n\n\n0,1\n",
    # accepted with classes = 0, refused with classes = 3
    "range-label-3": b"0,1\n3,1\n",
    "range-label-large": b"label,v\n1000,1\n",
    # malformed
    "bad-empty": b"",
    "bad-blank-only": b"\n \n\r\n",
    "bad-header-only": b"label,x1,x2\n",
    "bad-single-column": b"0\n1\n",
    "bad-ragged": b"0,1,2\n1,2\n",
    "bad-extra-field": b"0,1\n1,2,3\n",
    "bad-negative-label": b"0,1\n-1,2\n",
    "bad-float-label": b"1,1\n1.5,2\n",
    "bad-label-overflow": b"0,1\n99999999999999999999,2\n",
    "bad-label-int32-max": b"0,1\n2147483647,2\n",
    "bad-feature-text": b"0,1\n1,abc\n",
    "bad-feature-inf": b"0,inf\n",
    "bad-feature-nan": b"0,nan\n",
    "bad-feature-overflow": b"0,1e999\n",
    "bad-empty-feature": b"0,1\n1,\n",
    "bad-empty-feature-then-number": b"0,\n5,1\n",
    "bad-empty-label": b",1\n",
    "bad-nul-byte": b"0,1\n1,\x002\n",
    "bad-second-header": b"a,b\nc,d\n",
    "bad-trailing-junk": b"0,1.5x\n",
    "bad-vertical-tab": b"0,1\n\x0b\n2,3\n",
    "bad-bom-header-then-text": b"\xef\xbb\xbf1,2\nx,y\n",
}


def write_corpus(subdir, inputs):
    out = os.path.join(HERE, "corpus", subdir)
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(inputs.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    return len(inputs)


def main():
    n_idx = write_corpus("idx", IDX)
    n_csv = write_corpus("csv", CSV)
    print(f"make_corpus: wrote {n_idx} IDX and {n_csv} CSV inputs under {HERE}/corpus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
