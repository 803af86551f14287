#!/bin/sh
# Every global a device library defines starts with shoal_ (or, in the JNI
# library, is a Java_ native method): an app links these archives into its
# own binary, where an unprefixed client_send would collide with its own.
# usage: symbols.sh NM LIBRARY...
set -eu
nm_prog=$1
shift
status=0
for lib in "$@"; do
    bad=$("$nm_prog" -g --defined-only "$lib" |
        awk 'NF == 3 && $2 ~ /[TDBRCGSV]/ && $3 !~ /^shoal_/ && $3 !~ /^Java_org_shoal_/ && $3 !~ /^JNI_On(Un)?Load$/ { print $3 }' |
        sort -u)
    if [ -n "$bad" ]; then
        echo "$lib: globals without the shoal_ prefix:" >&2
        echo "$bad" | sed 's/^/  /' >&2
        status=1
    fi
done
exit $status
