#!/usr/bin/env python3
"""Known-answer vectors for secure-agg/, computed independently of the C
code: ChaCha20 from the `cryptography` package, X25519 from it too, BLAKE2b
from hashlib (libsodium's crypto_kdf_derive_from_key is BLAKE2b keyed by the
master key with the subkey id as salt and the context as personalisation),
and Shamir shares by evaluating a fixed polynomial over GF(2^31 - 1).

Run: /usr/bin/python3 tests/vectors/gen_secagg.py > tests/vectors/secagg.exp
Format: one `name hex` pair per line; ring vectors as little-endian words.
"""
import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives import serialization

P = 2**31 - 1


def chacha20_ietf(key, nbytes):
    # cryptography's ChaCha20 nonce: 4-byte little-endian counter, 12-byte nonce.
    c = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    return c.update(b"\0" * nbytes)


def out(name, data):
    print(name, data.hex())


seed = bytes(range(32))
# 37 elements cross no block boundary issue; 1100 cross the C code's 4 KiB pass.
for n in (37, 1100):
    ks = chacha20_ietf(seed, 4 * n)
    words = struct.unpack("<%dI" % n, ks)
    out("prg32_add_n%d" % n, struct.pack("<%dI" % n, *words))
    masked = [w & ((1 << 13) - 1) for w in words]
    out("prg13_add_n%d" % n, struct.pack("<%dI" % n, *masked))
ks = chacha20_ietf(seed, 8 * 600)
out("prg64_add_n600", ks)

sk_a = bytes((7 * i + 1) & 0xFF for i in range(32))
sk_b = bytes((11 * i + 3) & 0xFF for i in range(32))
a = X25519PrivateKey.from_private_bytes(sk_a)
b = X25519PrivateKey.from_private_bytes(sk_b)
raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
pk_a = a.public_key().public_bytes(*raw)
pk_b = b.public_key().public_bytes(*raw)
shared = a.exchange(b.public_key())
session = hashlib.sha256(b"shoal test session").digest()
lo, hi = sorted([pk_a, pk_b])
master = hashlib.blake2b(shared + session + lo + hi, digest_size=32).digest()
out("agree_sk_a", sk_a)
out("agree_sk_b", sk_b)
out("agree_pk_a", pk_a)
out("agree_pk_b", pk_b)
out("agree_session", session)
for purpose in (1, 2):
    key = hashlib.blake2b(b"", digest_size=32, key=master,
                          salt=struct.pack("<Q", purpose) + b"\0" * 8,
                          person=b"shoalsa1" + b"\0" * 8).digest()
    out("agree_key_%d" % purpose, key)

# Shamir: secret pieces as constant terms, fixed higher coefficients, t = 3.
secret = hashlib.sha256(b"shoal shamir secret").digest()
pieces = [secret[2 * j] | secret[2 * j + 1] << 8 for j in range(16)]
coef = [[pieces[j], (1234567 * (j + 1)) % P, (7654321 * (j + 3)) % P] for j in range(16)]
out("shamir_secret", secret)
for x in (1, 2, 5, 9):
    ys = [(c[0] + c[1] * x + c[2] * x * x) % P for c in coef]
    out("shamir_share_x%d" % x, struct.pack("<I16I", x, *ys))
