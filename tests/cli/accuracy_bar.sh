#!/usr/bin/env bash
# Runs shoal-train and checks that its last line is test_accuracy=0.xxxx
# with a value at or above the bar.
# Usage: accuracy_bar.sh SHOAL_TRAIN BAR [shoal-train options...]
set -euo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
train=$1
bar=$2
shift 2
out=$("$train" --quiet "$@")
printf '%s\n' "$out"
last=$(printf '%s\n' "$out" | tail -n 1)
if ! [[ "$last" =~ ^test_accuracy=0\.[0-9]{4}$ ]]; then
  echo "FAIL: last line is '$last', expected test_accuracy=0.xxxx"
  exit 1
fi
acc=${last#test_accuracy=}
if awk -v a="$acc" -v b="$bar" 'BEGIN { exit !(a >= b) }'; then
  echo "1 passed, 0 failed: test accuracy $acc >= $bar"
else
  echo "FAIL: test accuracy $acc is below the bar $bar"
  echo "0 passed, 1 failed"
  exit 1
fi
