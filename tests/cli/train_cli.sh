#!/usr/bin/env bash
# shoal-train's command line: --help documents every flag, bad input gives a
# clear error naming the flag and a non-zero exit.
# Usage: train_cli.sh SHOAL_TRAIN
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
train=$1
pass=0
fail=0

check() { # name, expected exit, expected text in output, args...
  local name=$1 want_rc=$2 want_text=$3
  shift 3
  local out rc
  out=$("$train" "$@" 2>&1)
  rc=$?
  if [[ $rc -eq $want_rc && "$out" == *"$want_text"* ]]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $name: exit $rc (want $want_rc), output:"
    printf '%s\n' "$out" | head -n 5
  fi
}

help=$("$train" --help)
for flag in --dataset --data-dir --model --epochs --batch --lr --optimizer --momentum \
            --weight-decay --lr-schedule --seed --threads --quiet --help; do
  if [[ "$help" == *"$flag"* ]]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: --help does not document $flag"; fi
done
check help_exits_zero 0 "Usage: shoal-train" --help
check unknown_flag 2 "unknown option '--epoch'" --epoch 3
check epochs_not_a_number 2 "--epochs: expected a whole number, got 'abc'" --epochs abc
check epochs_zero 2 "--epochs: 0 is out of range" --epochs 0
check negative_batch 2 "--batch: expected a whole number, got '-5'" --batch -5
check lr_garbage 2 "--lr: expected a number, got '0.1x'" --lr 0.1x
check lr_negative 2 "lr: must be a positive finite number" --lr -1
check momentum_too_big 2 "momentum: must be in [0, 1)" --optimizer momentum --momentum 1.5
check unknown_model 2 "--model: unknown model 'resnet'" --model resnet
check unknown_optimizer 2 "--optimizer: unknown optimizer 'lbfgs'" --optimizer lbfgs
check unknown_dataset 2 "--dataset: unknown dataset 'cifar10'" --dataset cifar10
check unknown_schedule 2 "--lr-schedule: unknown schedule 'step'" --lr-schedule step
check missing_value 2 "--seed needs a value" --seed
check stray_argument 2 "unexpected argument 'mlp'" mlp
check missing_data_dir 1 "/nonexistent/train-images-idx3-ubyte.gz: cannot open" --data-dir /nonexistent --epochs 1
check equals_form 2 "--threads: 0 is out of range" --threads=0

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
