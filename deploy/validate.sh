#!/bin/bash
# Checks deploy/: the examples parse, the CDK app synthesises (with cdk-nag's
# checks) and its template passes cfn-lint, the user-data is valid bash and fits
# EC2's 16 KB limit, and the systemd units verify. Optional linters run where
# installed; a check whose tool is missing is reported as skipped, never as passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${here}"
passed=0 failed=0 skipped=0

check() {
  local name=$1
  shift
  local out
  if out=$("$@" 2>&1); then
    printf 'ok    %s\n' "${name}"
    passed=$((passed + 1))
  else
    printf 'FAIL  %s\n%s\n' "${name}" "${out}" | sed '2,$s/^/      /'
    failed=$((failed + 1))
  fi
}
skip() {
  printf 'skip  %s (%s)\n' "$1" "$2"
  skipped=$((skipped + 1))
}

json_parses() { python3 -m json.tool "$1" >/dev/null; }
for f in examples/*.json; do
  check "json ${f}" json_parses "${f}"
done

# The CDK app, synthesised without an AWS account (npm ci at the root installs it).
synth_out=$(mktemp -d)
trap 'rm -rf -- "${synth_out}"' EXIT
cdk_synth() { (cd cdk && ../../node_modules/.bin/cdk synth --quiet -c cluster=validate --output "${synth_out}"); }
if [[ -x ../node_modules/.bin/cdk ]]; then
  check "cdk synth (with cdk-nag AwsSolutions checks)" cdk_synth
else
  skip "cdk synth" "run npm ci at the repository's root first"
fi

check "bash -n user-data/bootstrap.sh" bash -n user-data/bootstrap.sh
user_data_fits() { (($(wc -c <user-data/bootstrap.sh) < 16384)); }
check "user-data/bootstrap.sh under 16 KB" user_data_fits

if command -v shellcheck >/dev/null; then
  check "shellcheck" shellcheck user-data/bootstrap.sh validate.sh
else
  skip "shellcheck" "not installed"
fi
if command -v cfn-lint >/dev/null && [[ -f ${synth_out}/bosun-validate.template.json ]]; then
  check "cfn-lint of the synthesised template" cfn-lint "${synth_out}/bosun-validate.template.json"
else
  skip "cfn-lint" "not installed, or no template synthesised"
fi

# systemd-analyze verify insists that ExecStart exists; check copies that run
# /bin/true instead, since /opt/bosun is not installed here.
units_verify() {
  local tmp rc=0
  tmp=$(mktemp -d)
  cp systemd/*.service "${tmp}/"
  sed -i 's#/opt/bosun-node/bin/node#/bin/true#' "${tmp}"/*.service
  systemd-analyze verify "${tmp}"/*.service || rc=$?
  rm -rf -- "${tmp}"
  return "${rc}"
}
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify systemd/*.service" units_verify
else
  skip "systemd-analyze verify" "not installed"
fi

printf '%d passed, %d failed, %d skipped\n' "${passed}" "${failed}" "${skipped}"
((failed == 0))
