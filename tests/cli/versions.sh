#!/usr/bin/env bash
# Every program's --version prints its name and meson's project version,
# the version shoal_version() and the SDK's user agent carry.
# Usage: versions.sh PROJECT_VERSION PROGRAM...
set -uo pipefail
export LC_ALL=C
want=$1
shift
pass=0 fail=0
for prog in "$@"; do
  name=$(basename "$prog")
  out=$("$prog" --version 2>&1)
  rc=$?
  if [[ $rc -eq 0 && "$out" == "$name $want" ]]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $name --version: exit $rc, '$out', want '$name $want'"
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
