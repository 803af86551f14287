#!/usr/bin/env bash
# Every global a library defines starts with shoal_ (in the JNI library
# also the Java_org_shoal_ native methods and JNI_OnLoad, which JNI names):
# an app or a program linking several of them must not collide with a
# `client_send` or a `cfg_int` of ours. Names the library and each unprefixed symbol; exits 1 if
# there is any, 2 if a library cannot be read.
# Usage: symbols.sh LIB.a...   (NM in the environment overrides nm)
set -uo pipefail
export LC_ALL=C
nm=${NM:-nm}

if [[ $# -eq 0 ]]; then
    echo "symbols.sh: no static libraries given" >&2
    exit 2
fi

bad=0
for lib in "$@"; do
    if ! out=$("$nm" -g --defined-only "$lib" 2>&1); then
        echo "symbols.sh: $nm could not read $lib: $out" >&2
        exit 2
    fi
    # "addr type name" lines; upper-case types are defined globals (text,
    # data, bss, read-only, common, small data, weak). Object headers and
    # blank lines have fewer fields. The sanitizers' own instrumentation
    # (__odr_asan.shoal_x, __asan_*, ...) is the compiler's, not ours.
    unprefixed=$(awk 'NF == 3 && $2 ~ /^[TDBRCGSVW]$/ && $3 !~ /^shoal_/ &&
                      $3 !~ /^Java_org_shoal_/ && $3 !~ /^JNI_On(Un)?Load$/ &&
                      $3 !~ /^__(odr_asan|asan|ubsan|sanitizer|tsan|msan|sancov)/ { print $3 }' \
        <<<"$out" | sort -u)
    if [[ -n $unprefixed ]]; then
        count=$(wc -l <<<"$unprefixed")
        echo "$(basename "$lib"): $count global(s) without the shoal_ prefix:"
        sed 's/^/  /' <<<"$unprefixed"
        bad=1
    else
        echo "$(basename "$lib"): ok"
    fi
done
exit $bad
