#!/usr/bin/python3
"""Writes the seed corpus of the WebSocket client fuzz target
(tests/fuzz/ws_fuzz.c) into tests/fuzz/corpus/ws/.

    /usr/bin/python3 protocol/ws/make_fuzz_corpus.py

Each input is one flags byte (see ws_fuzz.c: bit 0 feeds a valid 101 first,
bit 1 small limits, bits 2-4 chunk size, bit 5 subprotocol, bit 6 echo
messages) and then the bytes the server sends. File names say what each
input is. Deterministic; rerunning rewrites the same files and leaves others
(inputs saved from fuzzing runs) alone. Standard library only.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "fuzz", "corpus", "ws")

ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
OK = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n")

HANDSHAKE = 0x01
SMALL = 0x02
ECHO = 0x40


def chunk(n):
    """Flags bits 2-4 for the chunk sizes 1, 2, 3, 5, 16, 64, 257, all."""
    return {1: 0, 2: 1, 3: 2, 5: 3, 16: 4, 64: 5, 257: 6, None: 7}[n] << 2


def frame(first, payload=b"", length_form=None, mask=None):
    """A server frame; length_form forces 16 or 64 to test minimal forms."""
    n = len(payload)
    b = bytes([first])
    mbit = 0x80 if mask else 0
    if length_form is None:
        length_form = 7 if n < 126 else 16 if n <= 0xFFFF else 64
    if length_form == 7:
        b += bytes([mbit | n])
    elif length_form == 16:
        b += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        b += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask:
        b += mask
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return b + payload


def close(code=None, reason=b""):
    return frame(0x88, b"" if code is None else struct.pack(">H", code) + reason)


H = HANDSHAKE
CORPUS = {
    # valid traffic after the handshake
    "valid-rfc-text-hello": (H, frame(0x81, b"Hello")),
    "valid-rfc-fragmented-hello": (H, frame(0x01, b"Hel") + frame(0x80, b"lo")),
    "valid-rfc-ping": (H, frame(0x89, b"Hello")),
    "valid-rfc-pong": (H, frame(0x8A, b"Hello")),
    "valid-binary-256": (H, frame(0x82, bytes(range(256)))),
    "valid-binary-64k": (H | chunk(257), frame(0x82, bytes(i % 251 for i in range(65536)))),
    "valid-empty-messages": (H, frame(0x81) + frame(0x82) + frame(0x01) + frame(0x80)),
    "valid-interleaved-control": (H | chunk(3) | ECHO,
                                  frame(0x01, b"\xe2\x82") + frame(0x89, b"p") +
                                  frame(0x8A, b"q") + frame(0x80, b"\xac") + close(1000, b"bye")),
    "valid-utf8-mixed": (H | chunk(1), frame(0x81, "κόσμε €𝄞".encode())),
    "valid-close-1000": (H, close(1000, b"normal")),
    "valid-close-empty": (H, close()),
    "valid-close-4999": (H, close(4999)),
    "valid-data-after-close": (H, close(1001) + frame(0x81, b"late")),
    "valid-ping-flood": (H | chunk(5), b"".join(frame(0x89, str(i).encode()) for i in range(40))),
    "valid-echo-small-limits": (H | SMALL | ECHO | chunk(2),
                                frame(0x82, bytes(100)) + frame(0x89, b"x") + frame(0x81, b"y" * 20)),
    "valid-limit-exact": (H | SMALL, frame(0x02, bytes(200)) + frame(0x80, bytes(100))),
    # protocol errors after the handshake
    "bad-masked-frame": (H, frame(0x81, b"Hello", mask=b"\x37\xfa\x21\x3d")),
    "bad-rsv1": (H, frame(0xC1, b"x")),
    "bad-rsv3": (H, frame(0x91, b"x")),
    "bad-opcode-3": (H, frame(0x83, b"x")),
    "bad-opcode-b": (H, frame(0x8B)),
    "bad-fragmented-ping": (H, frame(0x09)),
    "bad-long-ping": (H, frame(0x89, bytes(126))),
    "bad-orphan-continuation": (H, frame(0x80, b"x")),
    "bad-interleaved-messages": (H, frame(0x01, b"a") + frame(0x81, b"b")),
    "bad-nonminimal-16": (H, frame(0x82, b"x" * 10, length_form=16)),
    "bad-nonminimal-64": (H, frame(0x82, b"x" * 200, length_form=64)),
    "bad-64bit-top-bit": (H, b"\x82\x7f\x80" + bytes(7)),
    "bad-huge-length": (H, b"\x82\x7f\x7f" + b"\xff" * 7),
    "bad-frame-over-limit": (H | SMALL, frame(0x82, bytes(201))),
    "bad-message-over-limit": (H | SMALL, frame(0x02, bytes(200)) + frame(0x80, bytes(101))),
    "bad-utf8-overlong": (H, frame(0x81, b"\xc0\x80")),
    "bad-utf8-surrogate": (H, frame(0x81, b"\xed\xa0\x80")),
    "bad-utf8-truncated": (H, frame(0x01, b"\xe2\x82") + frame(0x80)),
    "bad-close-one-byte": (H, frame(0x88, b"\x03")),
    "bad-close-1005": (H, close(1005)),
    "bad-close-2999": (H, close(2999)),
    "bad-close-reason-utf8": (H, close(1000, b"\xff")),
    # the handshake itself (no flag: the input is the whole response)
    "hs-valid": (0, OK + frame(0x81, b"hi")),
    "hs-valid-byte-at-a-time": (chunk(1), OK + frame(0x82, b"\x00\x01")),
    "hs-valid-subprotocol": (0x20, OK[:-2] + b"Sec-WebSocket-Protocol: shoal.v1\r\n\r\n"),
    "hs-case-insensitive": (0, b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\n"
                               b"sec-websocket-accept: " + ACCEPT + b"\r\n\r\n"),
    "hs-bad-accept": (0, OK.replace(ACCEPT, b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
    "hs-no-upgrade": (0, OK.replace(b"Upgrade: websocket\r\n", b"")),
    "hs-extension": (0, OK[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
    "hs-403": (0, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
    "hs-401": (0, b"HTTP/1.1 401 Unauthorized\r\n\r\n"),
    "hs-503": (0, b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\n\r\n"),
    "hs-http10": (0, b"HTTP/1.0 101 Switching Protocols\r\n\r\n"),
    "hs-bare-lf": (0, OK.replace(b"\r\n", b"\n")),
    "hs-obs-fold": (0, OK[:-2] + b"X-A: 1\r\n  2\r\n\r\n"),
    "hs-too-long": (SMALL, b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Pad: " + b"p" * 300 + b"\r\n\r\n"),
    "hs-garbage": (0, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (flags, body) in sorted(CORPUS.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([flags]) + body)
    print(f"wrote {len(CORPUS)} inputs to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
