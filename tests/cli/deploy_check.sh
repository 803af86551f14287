#!/usr/bin/env bash
# The operator-facing deployment material in deploy/: make-certs makes a CA
# and a server certificate that verify, carry the names asked for, keep keys
# at 0600 and never overwrite without --force; the Kubernetes YAML parses;
# the example configs are JSON (and, given a shoal-server, pass
# --check-config); the systemd unit passes systemd-analyze verify.
# Usage: deploy_check.sh [SHOAL_SERVER]
# shellcheck disable=SC2015  # ok and bad always succeed
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
root=$(cd "$(dirname "$0")/../.." && pwd)
server=${1:-}
make_certs=$root/deploy/tls/make-certs
pass=0
fail=0
skip=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
skipped() { skip=$((skip + 1)); echo "skip: $*"; }
fingerprint() { openssl x509 -in "$1" -noout -fingerprint -sha256 2>/dev/null; }
mode() { stat -c %a "$1" 2>/dev/null; }

if ! command -v openssl >/dev/null; then
  echo "deploy_check: openssl not found" >&2
  exit 1
fi

# ---- make-certs -------------------------------------------------------------

help=$("$make_certs" --help 2>&1) && ok || bad "--help exited non-zero"
[[ "$help" == *"mbedTLS 2.28"* && "$help" == *"DNS names only"* ]] && ok ||
  bad "--help does not say the device SDK matches DNS names only"
for flag in --out --force --server-only --days; do
  [[ "$help" == *"$flag"* ]] && ok || bad "--help does not document $flag"
done

d=$tmp/certs
out=$("$make_certs" --out "$d" DNS:fl.example.com DNS:localhost IP:10.0.0.5 2>&1)
rc=$?
[[ $rc -eq 0 ]] && ok || { bad "first run exited $rc"; printf '%s\n' "$out" | tail -n 5; }
for f in ca.pem ca-key.pem server.pem server-key.pem; do
  [[ -s $d/$f ]] && ok || bad "$f was not made"
  [[ "$out" == *"$d/$f"* ]] && ok || bad "the report does not name $f"
done
[[ "$out" == *"openssl verify -CAfile"* ]] && ok || bad "the report does not show how to inspect the files"

verify=$(openssl verify -CAfile "$d/ca.pem" "$d/server.pem" 2>&1)
[[ "$verify" == "$d/server.pem: OK" ]] && ok || bad "server.pem does not verify against ca.pem: $verify"

san=$(openssl x509 -in "$d/server.pem" -noout -text 2>/dev/null | grep -A1 'Subject Alternative Name' | tail -n 1)
for want in "DNS:fl.example.com" "DNS:localhost" "IP Address:10.0.0.5"; do
  [[ "$san" == *"$want"* ]] && ok || bad "server.pem SAN lacks $want: $san"
done
[[ $(tr -cd ',' <<<"$san" | wc -c) -eq 2 ]] && ok || bad "server.pem has SANs that were not asked for: $san"
openssl x509 -in "$d/server.pem" -noout -subject | grep -q 'CN *= *fl.example.com' && ok ||
  bad "server.pem CN is not the first DNS name"

ca_text=$(openssl x509 -in "$d/ca.pem" -noout -text 2>/dev/null)
srv_text=$(openssl x509 -in "$d/server.pem" -noout -text 2>/dev/null)
[[ "$ca_text" == *"CA:TRUE"* ]] && ok || bad "ca.pem is not a CA certificate"
[[ "$ca_text" == *"prime256v1"* || "$ca_text" == *"P-256"* ]] && ok || bad "ca.pem key is not EC P-256"
[[ "$srv_text" == *"prime256v1"* || "$srv_text" == *"P-256"* ]] && ok || bad "server.pem key is not EC P-256"
[[ "$srv_text" == *"CA:FALSE"* ]] && ok || bad "server.pem is not marked CA:FALSE"
[[ "$srv_text" == *"TLS Web Server Authentication"* ]] && ok || bad "server.pem lacks extendedKeyUsage serverAuth"
# Ten years: still valid in 9.9 years, expired in 10.1.
openssl x509 -in "$d/ca.pem" -noout -checkend $((3613 * 86400)) >/dev/null && ok || bad "ca.pem expires before 10 years"
! openssl x509 -in "$d/ca.pem" -noout -checkend $((3687 * 86400)) >/dev/null && ok || bad "ca.pem outlives 10 years"

[[ $(mode "$d/ca-key.pem") == 600 ]] && ok || bad "ca-key.pem mode $(mode "$d/ca-key.pem"), want 600"
[[ $(mode "$d/server-key.pem") == 600 ]] && ok || bad "server-key.pem mode $(mode "$d/server-key.pem"), want 600"
[[ "$(openssl pkey -in "$d/server-key.pem" -pubout 2>/dev/null)" == "$(openssl x509 -in "$d/server.pem" -noout -pubkey 2>/dev/null)" ]] &&
  ok || bad "server-key.pem does not belong to server.pem"
[[ "$(openssl pkey -in "$d/ca-key.pem" -pubout 2>/dev/null)" == "$(openssl x509 -in "$d/ca.pem" -noout -pubkey 2>/dev/null)" ]] &&
  ok || bad "ca-key.pem does not belong to ca.pem"

# A second run refuses and changes nothing.
ca_fp=$(fingerprint "$d/ca.pem")
srv_fp=$(fingerprint "$d/server.pem")
key_sum=$(sha256sum <"$d/server-key.pem")
out=$("$make_certs" --out "$d" DNS:fl.example.com 2>&1)
rc=$?
[[ $rc -ne 0 ]] && ok || bad "second run without --force exited 0"
[[ "$out" == *"refusing to overwrite"* && "$out" == *"--force"* ]] && ok || bad "second run message: $out"
[[ $(fingerprint "$d/ca.pem") == "$ca_fp" && $(fingerprint "$d/server.pem") == "$srv_fp" &&
   $(sha256sum <"$d/server-key.pem") == "$key_sum" ]] && ok || bad "a refused run changed files"
[[ -z $(find "$d" -name '.make-certs.*') ]] && ok || bad "a refused run left a staging directory"

# --force replaces everything.
out=$("$make_certs" --out "$d" --force DNS:fl.example.com 2>&1)
rc=$?
[[ $rc -eq 0 ]] && ok || { bad "--force exited $rc"; printf '%s\n' "$out" | tail -n 3; }
[[ $(fingerprint "$d/ca.pem") != "$ca_fp" && $(fingerprint "$d/server.pem") != "$srv_fp" ]] && ok ||
  bad "--force did not replace the CA and server certificate"
[[ $(openssl verify -CAfile "$d/ca.pem" "$d/server.pem" 2>&1) == *": OK" ]] && ok || bad "after --force the pair does not verify"
[[ $(mode "$d/ca-key.pem") == 600 && $(mode "$d/server-key.pem") == 600 ]] && ok || bad "after --force key modes are not 600"

# --server-only keeps the CA; it too refuses to overwrite without --force.
ca_fp=$(fingerprint "$d/ca.pem")
srv_fp=$(fingerprint "$d/server.pem")
"$make_certs" --out "$d" --server-only DNS:fl.example.com >/dev/null 2>&1 && bad "--server-only overwrote without --force" || ok
out=$("$make_certs" --out "$d" --server-only --force DNS:new.example.com 2>&1)
rc=$?
[[ $rc -eq 0 ]] && ok || { bad "--server-only --force exited $rc"; printf '%s\n' "$out" | tail -n 3; }
[[ $(fingerprint "$d/ca.pem") == "$ca_fp" ]] && ok || bad "--server-only changed the CA"
[[ $(fingerprint "$d/server.pem") != "$srv_fp" ]] && ok || bad "--server-only did not make a new server certificate"
[[ $(openssl verify -CAfile "$d/ca.pem" "$d/server.pem" 2>&1) == *": OK" ]] && ok || bad "the renewed certificate does not verify against the kept CA"
openssl x509 -in "$d/server.pem" -noout -text 2>/dev/null | grep -q 'DNS:new.example.com' && ok || bad "the renewed certificate lacks its new name"

# Default SAN and bad input.
"$make_certs" --out "$tmp/default" >/dev/null 2>&1 && ok || bad "a run without SANs failed"
openssl x509 -in "$tmp/default/server.pem" -noout -text 2>/dev/null | grep -A1 'Subject Alternative Name' | tail -n 1 |
  grep -qx ' *DNS:localhost' && ok || bad "the default SAN is not DNS:localhost alone"
out=$("$make_certs" --out "$tmp/bad" DNS:not_a_name 2>&1) && bad "a bad DNS name was accepted" || ok
[[ "$out" == *"not_a_name"* ]] && ok || bad "the bad-name message does not name it: $out"
out=$("$make_certs" --out "$tmp/bad" IP:300.1.1.1 2>&1) && bad "a bad IP was accepted" || ok
out=$("$make_certs" --bogus 2>&1) && bad "an unknown option was accepted" || ok
[[ "$out" == *"unknown option '--bogus'"* ]] && ok || bad "unknown option message: $out"
[[ ! -e $tmp/bad/server.pem ]] && ok || bad "a refused run wrote a certificate"
out=$("$make_certs" --out "$tmp/iponly" IP:10.0.0.5 2>&1)
[[ "$out" == *"warning"*"IP SANs"* ]] && ok || bad "an IP-only certificate gave no warning about the device SDK"

# ---- Kubernetes YAML --------------------------------------------------------

yaml_files=()
while IFS= read -r -d '' f; do yaml_files+=("$f"); done < <(find "$root/deploy/k8s" -name '*.yaml' -print0 | sort -z)
[[ ${#yaml_files[@]} -ge 5 ]] && ok || bad "expected the k8s manifests under deploy/k8s, found ${#yaml_files[@]}"
if command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
  for f in "${yaml_files[@]}"; do
    if msg=$(python3 - "$f" <<'PY' 2>&1
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]
if not docs:
    sys.exit("no documents")
for d in docs:
    if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
        sys.exit("a document without apiVersion and kind")
    if d["kind"] != "Kustomization" and "namespace" in d.get("metadata", {}):
        sys.exit("sets metadata.namespace (the manifests are namespace-agnostic)")
    if d["kind"] == "ConfigMap":
        for key, text in d.get("data", {}).items():
            if key.endswith(".json"):
                json.loads(text)
PY
    ); then ok; else bad "${f#"$root"/}: $msg"; fi
  done
else
  skipped "python3 yaml not importable: checking the YAML for content and tabs only"
  for f in "${yaml_files[@]}"; do
    [[ -s $f ]] && ok || bad "${f#"$root"/} is empty"
    grep -q $'\t' "$f" && bad "${f#"$root"/} contains a tab" || ok
  done
fi

# ---- example configs --------------------------------------------------------

configs=("$root/deploy/container/shoal.json" "$root/deploy/proxy/shoal.json")
if command -v python3 >/dev/null; then
  for f in "${configs[@]}"; do
    python3 -m json.tool "$f" >/dev/null 2>&1 && ok || bad "${f#"$root"/} is not valid JSON"
  done
  # The ConfigMap's config too, when it can be extracted.
  if python3 -c 'import yaml' 2>/dev/null; then
    python3 -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["shoal.json"])' \
      "$root/deploy/k8s/configmap.yaml" >"$tmp/k8s.json" && configs+=("$tmp/k8s.json")
  fi
  # An example whose devices' listener takes every interface keeps /metrics
  # and the model download off it (http.listen), and off every interface
  # too unless a NetworkPolicy in its manifests limits who reaches them.
  for f in "${configs[@]}"; do
    if msg=$(python3 - "$f" "$root/deploy/k8s" <<'PY' 2>&1
import glob, json, sys
cfg = json.load(open(sys.argv[1]))
if cfg.get("listen", {}).get("address") != "0.0.0.0":
    sys.exit(0)
admin = cfg.get("http", {}).get("listen")
if admin is None:
    sys.exit("listens on 0.0.0.0 and serves /metrics there: set http.listen")
if admin.get("address", "127.0.0.1") == "0.0.0.0" and not cfg.get("http", {}).get("token"):
    policies = [p for p in glob.glob(sys.argv[2] + "/*.yaml") if "kind: NetworkPolicy" in open(p).read()]
    port = str(admin.get("port", 9464))
    if not any(port in open(p).read() for p in policies):
        sys.exit("http.listen on 0.0.0.0 without a token or a NetworkPolicy for port " + port)
PY
    ); then ok; else
      label=${f#"$root"/}
      [[ $f == "$tmp/k8s.json" ]] && label="deploy/k8s/configmap.yaml"
      bad "$label: $msg"
    fi
  done
  if [[ -n $server && -x $server ]]; then
    # Each example with its paths moved into the temp dir (state, TLS files,
    # secrets) must pass the server's own check.
    "$make_certs" --out "$tmp/tls" DNS:localhost >/dev/null 2>&1
    for f in "${configs[@]}"; do
      name=$(basename "$(dirname "$f")")-$(basename "$f")
      w=$tmp/check/$name
      mkdir -p "$w/state"
      python3 - "$f" "$w" "$tmp/tls" >"$w/shoal.json" <<'PY'
import json, os, sys
src, work, tls = sys.argv[1:4]
cfg = json.load(open(src))
cfg.setdefault("state", {})["path"] = os.path.join(work, "state", "shoal-state.db")
t = cfg.get("tls", {})
if t.get("enabled", True):
    t.update(cert=os.path.join(tls, "server.pem"), key=os.path.join(tls, "server-key.pem"))
for i, p in enumerate(cfg.get("populations", [])):
    a = p.get("auth", {})
    if "secret_file" in a:
        path = os.path.join(work, "population-%d.secret" % i)
        with open(path, "w") as out:
            out.write("0123456789abcdef0123456789abcdef\n")
        a["secret_file"] = path
json.dump(cfg, sys.stdout, indent=2)
PY
      out=$("$server" --check-config --config "$w/shoal.json" 2>&1)
      rc=$?
      [[ $rc -eq 0 && "$out" == *"fashion-mnist"* ]] && ok ||
        { bad "$name: shoal-server --check-config exited $rc:"; printf '%s\n' "$out" | tail -n 3; }
    done
  elif [[ -n $server ]]; then
    skipped "$server is not an executable: example configs not checked with --check-config"
  fi
else
  skipped "python3 not found: example configs not parsed"
fi

# ---- systemd unit -----------------------------------------------------------

unit=$root/deploy/systemd/shoal-server.service
if command -v systemd-analyze >/dev/null; then
  # The binary need not be installed here: verify a copy that runs /bin/true.
  # Nor its man page (Documentation=man:shoal-server(1)): the packages
  # install it, a build tree does not.
  mkdir -p "$tmp/unit"
  sed 's#/usr/local/bin/shoal-server#/bin/true#g' "$unit" >"$tmp/unit/shoal-server.service"
  out=$(systemd-analyze verify --man=no "$tmp/unit/shoal-server.service" 2>&1)
  rc=$?
  [[ $rc -eq 0 && -z $out ]] && ok || { bad "systemd-analyze verify ($rc):"; printf '%s\n' "$out" | tail -n 5; }
else
  skipped "systemd-analyze not found: unit not verified"
fi
for key in 'ProtectSystem=strict' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'StateDirectory=shoal' \
           'SystemCallFilter=@system-service' 'LimitNOFILE=65536' 'Restart=on-failure'; do
  grep -q "^$key" "$unit" && ok || bad "shoal-server.service lacks $key"
done

echo "$pass passed, $fail failed, $skip skipped"
[[ $fail -eq 0 ]]
