#!/usr/bin/env python3
"""armhf (arm-linux-gnueabihf) compile-and-link check of the device side,
for a machine without armhf -dev packages (see README.md, "armhf").

Usage: armhf_compile.py <aarch64-build-dir> <out-dir>

Takes the exact compile commands meson wrote for the aarch64 cross build
(compile_commands.json) for libshoal-device and the Shoal libraries it
needs, plus the test port and tests/cross, swaps the compiler for
arm-linux-gnueabihf-gcc and compiles into <out-dir>. Then:
  1. every header a compile read must be Shoal's own, the armhf cross
     toolchain's, or from a Multi-Arch: same Debian package (whose files in
     shared paths such as /usr/include are identical for every
     architecture); a header under an x86_64 or aarch64 path fails the check;
  2. every object must be a 32-bit ARM EABI5 hard-float object;
  3. the objects are archived (libshoal-*.a) and test-device-min is linked
     against the armhf glibc with unresolved symbols allowed, and every
     symbol left unresolved must belong to one of the external libraries
     that have no armhf package here (SQLite, libsodium, mbedTLS,
     protobuf-c, zlib). Nothing is run: the binary is incomplete.
"""
import collections
import json
import os
import re
import shlex
import subprocess
import sys

CC = "arm-linux-gnueabihf-gcc"
PREFIX = "arm-linux-gnueabihf-"

# meson's per-target object dirs -> archive name (link order: users first).
LIBS = [
    ("device-sdk/libshoal-device-test-port.a.p/", "libshoal-device-test-port.a"),
    ("device-sdk/libshoal-device.a.p/", "libshoal-device.a"),
    ("secure-agg/wire/libshoal-secagg-wire.a.p/", "libshoal-secagg-wire.a"),
    ("secure-agg/libshoal-secure-agg.a.p/", "libshoal-secure-agg.a"),
    ("protocol/tls/libshoal-tls.a.p/", "libshoal-tls.a"),
    ("protocol/ws/libshoal-ws.a.p/", "libshoal-ws.a"),
    ("example-store/libshoal-example-store.a.p/", "libshoal-example-store.a"),
    ("common/sqlite/libshoal-sqlite-util.a.p/", "libshoal-sqlite-util.a"),
    ("protocol/libshoal-protocol.a.p/", "libshoal-protocol.a"),
    ("ml/libshoal-ml.a.p/", "libshoal-ml.a"),
    ("common/libshoal-common.a.p/", "libshoal-common.a"),
]
TEST = "tests/cross/test-device-min.p/"

# Symbols the external libraries provide, by library.
EXTERNAL = [
    ("SQLite", re.compile(r"^sqlite3_")),
    ("libsodium", re.compile(r"^(sodium_|crypto_|randombytes)")),
    ("mbedTLS", re.compile(r"^mbedtls_")),
    ("protobuf-c", re.compile(r"^protobuf_c_")),
    ("zlib", re.compile(r"^(inflate|deflate|gz|crc32|adler32|compress|uncompress|zError|zlibVersion)")),
]


def run(argv, cwd=None, capture=False):
    r = subprocess.run(argv, cwd=cwd, text=True, capture_output=capture)
    if r.returncode != 0:
        if capture:
            sys.stderr.write(r.stdout + r.stderr)
        sys.exit("armhf: failed: " + " ".join(shlex.quote(a) for a in argv))
    return r.stdout if capture else None


def main():
    build, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    src_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(build, "compile_commands.json")) as f:
        entries = json.load(f)

    objects = collections.defaultdict(list)
    depfiles = []
    for e in entries:
        o = e["output"]
        key = next((d for d, _ in LIBS if o.startswith(d)), TEST if o.startswith(TEST) else None)
        if key is None:
            continue
        argv = shlex.split(e["command"])
        if not argv[0].endswith("aarch64-linux-gnu-gcc"):
            sys.exit("armhf: unexpected compiler in %s: %s" % (o, argv[0]))
        new = [CC]
        skip = 0
        for a in argv[1:]:
            if skip:
                skip -= 1
                continue
            if a in ("-o", "-MQ", "-MF"):
                skip = 1
                continue
            if a == "-MD":
                continue
            if "aarch64" in a or "x86_64" in a:
                sys.exit("armhf: architecture-specific flag %r in %s" % (a, o))
            new.append(a)
        obj = os.path.join(out, o)
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        new += ["-o", obj, "-MD", "-MF", obj + ".d"]
        run(new, cwd=e["directory"])
        objects[key].append(obj)
        depfiles.append(obj + ".d")
    for d, _ in LIBS + [(TEST, None)]:
        if not objects.get(d):
            sys.exit("armhf: no compile commands for %s in %s" % (d, build))
    nobj = sum(len(v) for v in objects.values())
    print("armhf: compiled %d sources with %s (flags from %s/compile_commands.json)" % (nobj, CC, os.path.basename(build)))

    # 1. Where the headers came from.
    headers = set()
    for dep in depfiles:
        with open(dep) as f:
            text = f.read().replace("\\\n", " ")
        for tok in text.split(":", 1)[1].split():
            headers.add(os.path.realpath(os.path.join(build, tok)))
    outside = sorted(h for h in headers
                     if not h.startswith(src_root + os.sep) and not h.startswith(build + os.sep))
    bad = [h for h in outside if "x86_64" in h or "aarch64" in h or "amd64" in h]
    if bad:
        sys.exit("armhf: compiled against architecture-specific headers:\n  " + "\n  ".join(bad))
    toolchain = [h for h in outside if h.startswith(("/usr/arm-linux-gnueabihf/", "/usr/lib/gcc-cross/arm-linux-gnueabihf/"))]
    shared = [h for h in outside if h not in toolchain]
    owners = {}
    if shared:
        r = subprocess.run(["dpkg", "-S"] + shared, text=True, capture_output=True)
        for line in r.stdout.splitlines():
            pkgs, path = line.split(": ", 1)
            owners[path] = [p.strip() for p in pkgs.split(",")]
    by_pkg = collections.defaultdict(int)
    for h in shared:
        pkgs = owners.get(h)
        if not pkgs:
            sys.exit("armhf: %s belongs to no package" % h)
        name = pkgs[0].split(":")[0]
        ma = subprocess.run(["dpkg-query", "-W", "-f=${Multi-Arch}\n", pkgs[0]], text=True,
                            capture_output=True).stdout.split()
        if not ma or ma[0] != "same":
            sys.exit("armhf: %s comes from %s, which is not Multi-Arch: same" % (h, pkgs[0]))
        by_pkg[name] += 1
    print("armhf: headers outside Shoal: %d from the armhf cross toolchain (/usr/arm-linux-gnueabihf, gcc-cross), "
          "%d shared headers from Multi-Arch: same packages (%s); none under an x86_64 or aarch64 path"
          % (len(toolchain), len(shared), ", ".join("%s %d" % kv for kv in sorted(by_pkg.items()))))

    # 2. What the objects are.
    for objs in objects.values():
        for obj in objs:
            # An object records its float ABI in .ARM.attributes, not in
            # the ELF header flags (those are set on linked executables).
            h = run([PREFIX + "readelf", "-h", "-A", obj], capture=True)
            if not re.search(r"Machine:\s+ARM\n", h) or "ELF32" not in h \
                    or "Version5 EABI" not in h or "Tag_ABI_VFP_args: VFP registers" not in h:
                sys.exit("armhf: %s is not an ARM EABI5 hard-float ELF32 object:\n%s" % (obj, h))
    print("armhf: all %d objects are ELF32 ARM, EABI5, Tag_ABI_VFP_args: VFP registers (hard-float)" % nobj)

    # 3. Archives and the link.
    archives = []
    for d, name in LIBS:
        a = os.path.join(out, name)
        if os.path.exists(a):
            os.remove(a)
        run([PREFIX + "ar", "rcs", a] + sorted(objects[d]))
        archives.append(a)
    sdk = os.path.join(out, "libshoal-device.a")
    size = run([PREFIX + "size", "-t", sdk], capture=True).splitlines()[-1].split()
    print("armhf: libshoal-device.a alone: file %.1f KB, text+data+bss %.1f KB"
          % (os.path.getsize(sdk) / 1024, (int(size[0]) + int(size[1]) + int(size[2])) / 1024))
    # A real link against the armhf glibc: it must fail, and only on the
    # external libraries. GNU ld reports every undefined reference, so a
    # missing Shoal or libc symbol would show up here too.
    exe = os.path.join(out, "test-device-min")
    r = subprocess.run([CC, "-o", exe] + objects[TEST] + archives + ["-lm", "-lpthread"],
                       text=True, capture_output=True)
    missing = set(re.findall(r"undefined reference to `([^']+)'", r.stderr))
    other = [l for l in r.stderr.splitlines()
             if l.strip() and "undefined reference to" not in l and "in function" not in l
             and "ld returned 1 exit status" not in l]
    external = collections.defaultdict(int)
    unknown = []
    for sym in sorted(missing):
        lib = next((n for n, rx in EXTERNAL if rx.match(sym)), None)
        if lib:
            external[lib] += 1
        else:
            unknown.append(sym)
    if r.returncode == 0 or not missing or unknown or other:
        sys.stderr.write(r.stderr)
        sys.exit("armhf: the link did not fail exactly on the external libraries; unexpected: "
                 + " ".join(unknown + other[:5]))
    print("armhf: linking test-device-min against the armhf glibc fails only on %d symbols of the "
          "libraries with no armhf package here (%s); every Shoal-internal, libc, libm and "
          "libpthread reference resolved"
          % (len(missing), ", ".join("%s %d" % kv for kv in sorted(external.items()))))
    print("armhf: not run (incomplete binary); see deploy/cross/README.md for what this proves")


if __name__ == "__main__":
    main()
