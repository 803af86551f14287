#!/usr/bin/env bash
# shoal-sim's command line and config file: --help documents every option,
# bad input gives a clear error and a non-zero exit, a short run writes its
# CSV, JSON summary and final line.
# Usage: sim_cli.sh SHOAL_SIM SHOAL_PRIVACY
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
sim=$1
privacy=${2:-}
pass=0
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

check() { # name, expected exit, expected text in output, args...
  local name=$1 want_rc=$2 want_text=$3
  shift 3
  local out rc
  out=$("$sim" "$@" 2>&1)
  rc=$?
  if [[ $rc -eq $want_rc && "$out" == *"$want_text"* ]]; then ok; else
    bad "$name: exit $rc (want $want_rc), output:"; printf '%s\n' "$out" | tail -n 4
  fi
}

help=$("$sim" --help)
for flag in --strategy --mode --clients-per-round --over-selection --deadline --local-epochs \
            --batch --lr --momentum --prox-mu --server-lr --beta1 --beta2 --tau --buffer-size \
            --max-staleness --partition --alpha --shards-per-client --config --out --seed --threads \
            --retry-min --retry-max; do
  [[ "$help" == *"$flag"* ]] && ok || bad "--help does not document $flag"
done
check unknown_option 2 "unknown option '--round'" --round 3
check bad_number 2 "rounds: expected a whole number, got 'ten'" --rounds ten
check bad_strategy 2 "strategy: unknown value 'fedsgd'" --strategy fedsgd
check bad_partition 2 "partition: unknown value 'skewed'" --partition skewed
check too_many_per_round 2 "clients-per-round: 20 is more than the 10 clients" --clients 10 --clients-per-round 20
check bad_momentum 2 "momentum: must be in [0, 1)" --momentum 2
check bad_deadline 2 "deadline: must be a positive number of seconds" --deadline 0
check bad_retry_min 2 "retry-min: must be a positive number of seconds" --retry-min 0
check retry_min_above_max 2 "retry-min: 5.000 s is more than retry-max (1.000 s)" --retry-min 5 --retry-max 1
check bad_dropout 2 "dropout: must be in [0, 1)" --dropout 1.5
check missing_value 2 "--seed needs a value" --seed
check stray 2 "unexpected argument 'cnn'" cnn

printf '{ "rounds": 3,\n  "clients": 20\n  "model": "logreg" }\n' > "$tmp/broken.json"
check json_syntax 2 "broken.json:3:" --config "$tmp/broken.json"
printf '{ "rounds": 3, "colour": "blue" }\n' > "$tmp/unknown.json"
check json_unknown_key 2 'unknown.json: unknown option "colour"' --config "$tmp/unknown.json"
printf '{ "rounds": "many" }\n' > "$tmp/badval.json"
check json_bad_value 2 "badval.json: rounds: expected a whole number, got 'many'" --config "$tmp/badval.json"
printf '[1, 2]\n' > "$tmp/array.json"
check json_not_object 2 "expected a JSON object" --config "$tmp/array.json"

# A short real run from a config file, overridden on the command line.
cat > "$tmp/run.json" <<JSON
{ "model": "logreg", "clients": 20, "clients-per-round": 5, "rounds": 50,
  "partition": "dirichlet", "alpha": 0.5, "local-epochs": 1, "batch": 32,
  "optimizer": "sgd", "lr": 0.05, "avail-hours": 24, "dropout": 0, "plot": "svg" }
JSON
out=$("$sim" --config "$tmp/run.json" --rounds 3 --out "$tmp/out" 2>&1)
rc=$?
last=$(printf '%s\n' "$out" | tail -n 1)
[[ $rc -eq 0 ]] && ok || { bad "short run exited $rc"; printf '%s\n' "$out" | tail -n 5; }
[[ "$last" =~ ^final_test_accuracy=0\.[0-9]{4}$ ]] && ok || bad "last line '$last'"
acc=${last#final_test_accuracy=}
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' && ok || bad "3 rounds reached only $acc"
[[ $(wc -l < "$tmp/out/rounds.csv") -eq 4 ]] && ok || bad "rounds.csv should have a header and 3 rows"
head -n 1 "$tmp/out/rounds.csv" | grep -q '^round,sim_time_s,selected,reported,dropped,late,train_loss,test_accuracy,federated_eval_accuracy,bytes_down,bytes_up,wall_s' && ok || bad "rounds.csv header"
# train_s, the last column: the seconds in device sessions, positive (every
# round trained) and at most the wall time since the previous row.
awk -F, 'NR == 1 { ok = $NF == "train_s"; next }
         { if (!($NF > 0 && $NF <= $12 - prev + 2e-3)) ok = 0; prev = $12 }
         END { exit !ok }' "$tmp/out/rounds.csv" && ok || bad "rounds.csv train_s column"
grep -q '"final_test_accuracy"' "$tmp/out/summary.json" && ok || bad "summary.json"
grep -q '"rounds_committed": 3' "$tmp/out/summary.json" && ok || bad "summary.json rounds_committed"
if command -v gnuplot >/dev/null; then
  [[ -s "$tmp/out/accuracy.svg" ]] && ok || bad "accuracy.svg missing"
fi

# Secure aggregation: bad fixed-point settings are refused naming the flag;
# short runs with SecAgg and SecAgg+ complete and report its cost per round.
check secagg_clip_zero 2 "secagg-clip: must be a positive finite number" --secagg --secagg-clip 0
check secagg_clip_negative 2 "secagg-clip: must be a positive finite number" --secagg --secagg-clip -2
check secagg_clip_nan 2 "secagg-clip: expected a number, got 'nan'" --secagg --secagg-clip nan
check secagg_bits_wrap 2 "secagg-bits: 8 bits cannot hold the sum" --secagg --secagg-bits 8
check secagg_async 2 "mode: secure aggregation needs synchronous rounds" --secagg --mode async
for mode in --secagg --secagg-plus; do
  out=$("$sim" --config "$tmp/run.json" --rounds 3 --clients-per-round 8 "$mode" \
        --secagg-phase-dropout 0.05 --out "$tmp/sa$mode" 2>&1)
  rc=$?
  last=$(printf '%s\n' "$out" | tail -n 1)
  [[ $rc -eq 0 && "$last" =~ ^final_test_accuracy=0\.[0-9]{4}$ ]] && ok || {
    bad "$mode run exited $rc"; printf '%s\n' "$out" | tail -n 5; }
  [[ "$out" == *"secagg "*"groups 1"* ]] && ok || bad "$mode: no secure-aggregation figures per round"
  head -n 1 "$tmp/sa$mode/rounds.csv" | grep -q 'secagg_s,secagg_drop_advertise,secagg_drop_share,secagg_drop_mask,secagg_drop_unmask' && ok || bad "$mode: rounds.csv lacks the secagg columns"
  grep -q '"secagg_dropouts"' "$tmp/sa$mode/summary.json" && ok || bad "$mode: summary.json"
done

# DP-FedAvg: bad settings name the flag; the epsilon a run reports is
# shoal-privacy's for the same q, z and rounds; the budget stops the run.
check dp_clip_negative 2 "dp-clip: must be a positive L2 norm" --dp-clip -1
check dp_noise_alone 2 "dp-noise, dp-budget: need --dp-clip" --dp-noise 1
check dp_delta 2 "dp-delta: must be in (0, 1)" --dp-clip 1 --dp-delta 0
check poisson_async 2 "sampling: poisson needs synchronous rounds" --sampling poisson --mode async
check bad_sampling 2 "sampling: unknown value 'uniform' (choose checkin, poisson or shuffle)" --sampling uniform
dp_args=(--config "$tmp/run.json" --clients 100 --clients-per-round 10 --dp-clip 1 --dp-noise 1.1)
out=$("$sim" "${dp_args[@]}" --rounds 3 --sampling poisson 2>&1)
rc=$?
eps=$(printf '%s\n' "$out" | sed -n 's/^epsilon=\([^ ]*\) .*sampling=poisson$/\1/p')
[[ $rc -eq 0 && -n "$eps" ]] && ok || { bad "dp run exited $rc"; printf '%s\n' "$out" | tail -n 5; }
[[ "$out" == *"epsilon "*"(order "* ]] && ok || bad "dp rows do not print epsilon"
if [[ -n "$privacy" ]]; then
  want=$("$privacy" epsilon --sampling-rate 0.1 --noise-multiplier 1.1 --steps 3 --delta 1e-5 |
         sed -n 's/^epsilon=\([^ ]*\) .*/\1/p')
  awk -v a="$eps" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d <= 1e-8 * b) }' &&
    ok || bad "epsilon $eps, shoal-privacy says $want"
fi
out=$("$sim" "${dp_args[@]}" --rounds 3 2>&1)
[[ "$out" == *"sampling is not Poisson"* && "$out" == *"sampling=checkin (not Poisson: assumption not met)"* ]] &&
  ok || bad "a run without Poisson sampling must say its epsilon assumes it"
out=$("$sim" "${dp_args[@]}" --rounds 50 --sampling poisson --dp-budget 2.5 --out "$tmp/budget" 2>&1)
rc=$?
[[ $rc -eq 0 && "$out" == *"stopped_by_budget: epsilon "*"above --dp-budget 2.5"* ]] && ok ||
  { bad "budget: exit $rc"; printf '%s\n' "$out" | tail -n 4; }
grep -q '"stopped_by_budget": true' "$tmp/budget/summary.json" && ok || bad "summary.json lacks the budget stop"
committed=$(sed -n 's/.*"rounds_committed": \([0-9]*\).*/\1/p' "$tmp/budget/summary.json")
[[ -n "$committed" && $committed -gt 0 && $committed -lt 50 ]] && ok || bad "budget: $committed rounds committed"

# DP-FTRL: refusals name the flag; with shuffled sampling (each device once
# in 10 rounds) and a tree every 3 rounds, k = 1 and 6 rounds are two trees
# of height 2: rho = 2 x 1 x 2 / (2 z^2) = 0.5 at z = 2, in the last line,
# each row and summary.json.
check ftrl_without_noise 2 "dp-noise: --dp-mechanism ftrl needs a noise multiplier > 0" --dp-clip 1 --dp-mechanism ftrl
check ftrl_restart_fedavg 2 "dp-ftrl-restart: only with --dp-mechanism ftrl" --dp-clip 1 --dp-noise 1 --dp-ftrl-restart 5
check ftrl_without_clip 2 "dp-mechanism, dp-ftrl-restart, dp-adaptive-quantile: need --dp-clip" --dp-mechanism ftrl
check bad_mechanism 2 "dp-mechanism: unknown value 'sgd' (choose fedavg or ftrl)" --dp-clip 1 --dp-mechanism sgd
out=$("$sim" --config "$tmp/run.json" --clients 100 --clients-per-round 10 --dp-clip 1 --dp-noise 2 \
      --dp-mechanism ftrl --dp-ftrl-restart 3 --sampling shuffle --rounds 6 --out "$tmp/ftrl" 2>&1)
rc=$?
[[ $rc -eq 0 && "$out" == *"rho=0.5 k=1 noise=2 restart=3 rounds=6 mechanism=ftrl"*"sampling=shuffle"* ]] &&
  ok || { bad "ftrl: exit $rc"; printf '%s\n' "$out" | tail -n 4; }
# Round 4 opens tree 2 (height 1): 0.25 + 0.125; rounds 5 and 6: 0.25 + 0.25.
[[ $(grep -c ' rho 0.375 epsilon ' <<< "$out") -eq 1 && $(grep -c ' rho 0.5 epsilon ' <<< "$out") -eq 2 ]] &&
  ok || bad "ftrl rows: round 4 should print rho 0.375, rounds 5 and 6 rho 0.5"
grep -q '"mechanism": "ftrl"' "$tmp/ftrl/summary.json" && grep -q '"rho": 0.5' "$tmp/ftrl/summary.json" &&
  ok || bad "summary.json lacks ftrl's rho"
[[ $(tail -n 1 "$tmp/ftrl/rounds.csv" | awk -F, '{ print $(NF - 3) "," $(NF - 2) "," $(NF - 1) }') == "nan,0.5,1" ]] &&
  ok || bad "rounds.csv: no order, rho 0.5 and clip 1 in the last row: $(tail -n 1 "$tmp/ftrl/rounds.csv")"

# Adaptive clipping: refusals name the flag; from a clip far below the
# updates' norms the median target raises it, and the run says so.
check adaptive_range 2 "dp-adaptive-quantile: must be in (0, 1)" --dp-clip 1 --dp-noise 1 --dp-adaptive-quantile 1.5
check adaptive_ftrl 2 "dp-adaptive-quantile: only with --dp-mechanism fedavg" --dp-clip 1 --dp-noise 1 --dp-mechanism ftrl --dp-adaptive-quantile 0.5
check adaptive_count_noise 2 "dp-adaptive-count-noise: dp adaptive clipping: the count's noise (0.4) must be above half the noise multiplier z (1)" --dp-clip 1 --dp-noise 1 --dp-adaptive-quantile 0.5 --dp-adaptive-count-noise 0.4
out=$("$sim" --config "$tmp/run.json" --clients 100 --clients-per-round 20 --dp-clip 0.001 --dp-noise 0.5 \
      --dp-adaptive-quantile 0.5 --dp-adaptive-rate 1 --sampling poisson --rounds 6 --out "$tmp/adaptive" 2>&1)
rc=$?
[[ $rc -eq 0 && "$out" == *"adaptive clipping (Andrew et al. 2021) from clip 0.001"* ]] && ok ||
  { bad "adaptive: exit $rc"; printf '%s\n' "$out" | tail -n 4; }
final=$(sed -n 's/.*"final_clip": \([0-9.e+-]*\).*/\1/p' "$tmp/adaptive/summary.json")
awk -v c="$final" 'BEGIN { exit !(c > 0.002) }' && ok || bad "adaptive: the clip stayed at $final"

# Robust aggregation and attackers: refused with secure aggregation; every
# aggregator and attack runs.
check robust_secagg 2 "aggregator: median needs every individual update, which secure aggregation hides" --aggregator median --secagg
check robust_unknown 2 "aggregator: unknown value 'krum' (choose mean, median, trimmed_mean or norm_bounded)" --aggregator krum
check norm_bound_missing 2 "norm-bound: --aggregator norm_bounded needs a positive L2 bound" --aggregator norm_bounded
check trim_range 2 "trim-fraction: must be in [0, 0.5)" --aggregator trimmed_mean --trim-fraction 0.6
check attack_without_fraction 2 "attackers, attack: give both" --attack scale
check bad_attack 2 "attack: unknown value 'flip'" --attackers 0.1 --attack flip
for run in "median sign_flip" "trimmed_mean scale" "norm_bounded noise"; do
  set -- $run
  out=$("$sim" --config "$tmp/run.json" --rounds 2 --clients-per-round 8 --aggregator "$1" \
        --norm-bound 1 --trim-fraction 0.25 --attackers 0.2 --attack "$2" --out "$tmp/rb-$1" 2>&1)
  rc=$?
  [[ $rc -eq 0 && "$(printf '%s\n' "$out" | tail -n 1)" =~ ^final_test_accuracy=0\.[0-9]{4}$ ]] && ok ||
    { bad "--aggregator $1 --attack $2 exited $rc"; printf '%s\n' "$out" | tail -n 4; }
  grep -q "\"aggregator\": \"$1\"" "$tmp/rb-$1/summary.json" && grep -q "\"attack\": \"$2\"" "$tmp/rb-$1/summary.json" &&
    ok || bad "summary.json lacks the aggregator or attack"
done

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
