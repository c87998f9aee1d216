#!/bin/bash
# Bosun node bootstrap: EC2 user-data for Debian 12. Safe to run again (it
# converges); run it again to upgrade Bosun after uploading a new tarball.
#
# It installs the AWS CLI and Node.js 24 (checked against its SHASUMS256.txt),
# fetches s3://$BOSUN_BUCKET/dist/bosun.tgz (`npm run bundle`), checks it against
# dist/bosun.tgz.sha256, unpacks it under /opt/bosun, creates the bosun user,
# fetches the coordinator's key from SSM (coordinators), installs the trust file
# from dist/trust.json, and enables the units the bosun:role tag calls for.
# See deploy/README.md.
set -euo pipefail

# ---- SETTINGS: set the bucket here (or in the environment) -----------------
BOSUN_BUCKET="${BOSUN_BUCKET:-}"
BOSUN_DIST_KEY="${BOSUN_DIST_KEY:-dist/bosun.tgz}"
BOSUN_TRUST_KEY="${BOSUN_TRUST_KEY:-dist/trust.json}"
# The Node.js the bundle is built and tested with (package.json's `node` dev dependency).
BOSUN_NODE_VERSION="${BOSUN_NODE_VERSION:-24.21.0}"
BOSUN_NODE_MIRROR="${BOSUN_NODE_MIRROR:-https://nodejs.org/dist}"
# -----------------------------------------------------------------------------

readonly PREFIX=/opt/bosun
readonly RELEASES=/opt/bosun-releases
readonly NODE_PREFIX=/opt/bosun-node
readonly NODE=${NODE_PREFIX}/bin/node
readonly ETC=/etc/bosun
readonly UNIT_DIR=/etc/systemd/system
readonly IMDS=http://169.254.169.254

log() { printf 'bosun-bootstrap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ ${EUID} -eq 0 ]] || die "must run as root"
umask 022

# Every value read from outside is checked against a strict pattern before use.
[[ ${BOSUN_BUCKET} =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] \
  || die "BOSUN_BUCKET must be set to the cluster's bucket name (got '${BOSUN_BUCKET}')"
[[ ${BOSUN_DIST_KEY} =~ ^[A-Za-z0-9/._-]+$ && ${BOSUN_TRUST_KEY} =~ ^[A-Za-z0-9/._-]+$ ]] \
  || die "BOSUN_DIST_KEY and BOSUN_TRUST_KEY must be plain S3 keys"
[[ ${BOSUN_NODE_VERSION} =~ ^24\.[0-9]+\.[0-9]+$ ]] || die "BOSUN_NODE_VERSION must be a Node.js 24 version like 24.21.0 (got '${BOSUN_NODE_VERSION}')"
[[ ${BOSUN_NODE_MIRROR} =~ ^https?://[A-Za-z0-9.:/_-]+$ ]] || die "BOSUN_NODE_MIRROR must be an http(s) URL (got '${BOSUN_NODE_MIRROR}')"

# A network blip at boot: the AWS CLI retries on its own, and downloads go
# through retry, bounded (five attempts, 2+4+8+16 s apart).
export AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=8
retry() {
  local attempt
  for attempt in 1 2 3 4 5; do
    "$@" && return 0
    ((attempt < 5)) || break
    log "attempt ${attempt} of '$1' failed; trying again in $((2 ** attempt)) s"
    sleep $((2 ** attempt))
  done
  return 1
}

if [[ -r /etc/os-release ]]; then
  # shellcheck source=/dev/null
  os_id=$(. /etc/os-release && printf '%s %s' "${ID:-}" "${VERSION_ID:-}")
  [[ ${os_id} == "debian 12" ]] || log "warning: written for Debian 12, this is '${os_id}'"
fi

work=$(mktemp -d /var/tmp/bosun-bootstrap.XXXXXX)
trap 'rm -rf -- "${work}"' EXIT

# ---- packages -----------------------------------------------------------------
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("${pkg}")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # cloud-init and unattended-upgrades may hold the dpkg lock at first boot.
  apt-get -o DPkg::Lock::Timeout=300 update -q
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
}
apt_install ca-certificates curl awscli tar gzip xz-utils

# ---- instance metadata (IMDSv2 only) -----------------------------------------------
token=$(curl -fsS --retry 5 --retry-connrefused --connect-timeout 2 --max-time 10 -X PUT \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 600' "${IMDS}/latest/api/token") \
  || die "cannot get an IMDSv2 token"
imds() {
  curl -fsS --retry 3 --connect-timeout 2 --max-time 10 \
    -H "X-aws-ec2-metadata-token: ${token}" "${IMDS}/latest/meta-data/$1"
}
region=$(imds placement/region) || die "cannot read the region from instance metadata"
instance_id=$(imds instance-id) || die "cannot read the instance id from instance metadata"
[[ ${region} =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "unexpected region '${region}'"
[[ ${instance_id} =~ ^i-[0-9a-f]{8,17}$ ]] || die "unexpected instance id '${instance_id}'"

# Tag value from instance metadata when tags are exposed there, else from the
# EC2 API (tags can take a moment to appear on a new instance).
read_tag() {
  local key=$1 value attempt
  if value=$(imds "tags/instance/${key}" 2>/dev/null) && [[ -n ${value} ]]; then
    printf '%s' "${value}"
    return 0
  fi
  for attempt in 1 2 3 4 5 6; do
    value=$(aws ec2 describe-tags --region "${region}" --output text \
      --filters "Name=resource-id,Values=${instance_id}" "Name=key,Values=${key}" \
      --query 'Tags[0].Value') || value=
    if [[ -n ${value} && ${value} != None ]]; then
      printf '%s' "${value}"
      return 0
    fi
    sleep $((attempt * 5))
  done
  return 1
}

cluster=$(read_tag bosun:cluster) || die "instance has no bosun:cluster tag"
roles_tag=$(read_tag bosun:role) || die "instance has no bosun:role tag"
[[ ${cluster} =~ ^[a-z0-9-]{1,32}$ ]] || die "bosun:cluster must match ^[a-z0-9-]{1,32}\$ (got '${cluster}')"

has_web=false has_agent=false has_coordinator=false
roles_seen=
IFS=',' read -r -a roles <<<"${roles_tag}"
for role in "${roles[@]}"; do
  role=${role//[[:space:]]/}
  roles_seen+="${roles_seen:+,}${role}"
  case ${role} in
    web) has_web=true has_agent=true ;;
    db | balancer) has_agent=true ;;
    coordinator) has_coordinator=true ;;
    *) die "bosun:role holds unknown role '${role}' (known: web, db, balancer, coordinator)" ;;
  esac
done
${has_agent} || ${has_coordinator} || die "bosun:role is empty"
log "instance ${instance_id} in ${region}, cluster ${cluster}, roles ${roles_tag}"

if ${has_web}; then
  apt_install git openssh-client
fi

# ---- user ---------------------------------------------------------------------
if ! getent passwd bosun >/dev/null; then
  log "creating user bosun"
  group_opt=(--user-group)
  getent group bosun >/dev/null && group_opt=(--gid bosun)
  useradd --system "${group_opt[@]}" --home-dir /var/lib/bosun --no-create-home \
    --shell /usr/sbin/nologin --comment "Bosun agent" bosun
fi

# Builds run the repository's code as their own user, which owns nothing and
# cannot read the agent's keys or state.
if ${has_web} && ! getent passwd bosun-build >/dev/null; then
  log "creating user bosun-build"
  useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin --comment "Bosun builds" bosun-build
fi

# ---- Node.js 24 -------------------------------------------------------------------
case $(uname -m) in
  x86_64) node_arch=x64 ;;
  aarch64) node_arch=arm64 ;;
  *) die "no Node.js build for this CPU ($(uname -m))" ;;
esac
node_dir="${NODE_PREFIX}-v${BOSUN_NODE_VERSION}-${node_arch}"
if [[ ! -x ${node_dir}/bin/node ]]; then
  node_tarball="node-v${BOSUN_NODE_VERSION}-linux-${node_arch}.tar.xz"
  log "fetching ${BOSUN_NODE_MIRROR}/v${BOSUN_NODE_VERSION}/${node_tarball}"
  for file in "${node_tarball}" SHASUMS256.txt; do
    retry curl -fsS --connect-timeout 10 --max-time 600 -o "${work}/${file}" \
      "${BOSUN_NODE_MIRROR}/v${BOSUN_NODE_VERSION}/${file}" || die "cannot fetch ${file} from ${BOSUN_NODE_MIRROR}"
  done
  grep -F "  ${node_tarball}" "${work}/SHASUMS256.txt" >"${work}/node.sha256" \
    || die "SHASUMS256.txt does not list ${node_tarball}"
  (cd "${work}" && sha256sum --check --status node.sha256) || die "${node_tarball} does not match its SHA-256"
  rm -rf -- "${node_dir}.partial"
  install -d -m 0755 "${node_dir}.partial"
  tar -xJf "${work}/${node_tarball}" -C "${node_dir}.partial" --strip-components=1 --no-same-owner
  mv -T -- "${node_dir}.partial" "${node_dir}"
fi
[[ $("${node_dir}/bin/node" --version) == "v${BOSUN_NODE_VERSION}" ]] || die "${node_dir}/bin/node is not Node.js ${BOSUN_NODE_VERSION}"
ln -sfn -- "${node_dir}" "${NODE_PREFIX}.new"
mv -T -- "${NODE_PREFIX}.new" "${NODE_PREFIX}"

# ---- Bosun release ----------------------------------------------------------------
# The bundle and its SHA-256, written together by `npm run bundle`; nothing is unpacked unchecked.
for key in "${BOSUN_DIST_KEY}" "${BOSUN_DIST_KEY}.sha256"; do
  log "fetching s3://${BOSUN_BUCKET}/${key}"
  retry aws s3 cp --only-show-errors --region "${region}" "s3://${BOSUN_BUCKET}/${key}" "${work}/" \
    || die "cannot fetch s3://${BOSUN_BUCKET}/${key}"
done
dist_file=${BOSUN_DIST_KEY##*/}
digest=$(cut -c1-64 "${work}/${dist_file}.sha256")
[[ ${digest} =~ ^[0-9a-f]{64}$ && $(cut -c67- "${work}/${dist_file}.sha256") == "${dist_file}" ]] \
  || die "${BOSUN_DIST_KEY}.sha256 is not '<sha256>  ${dist_file}'"
(cd "${work}" && sha256sum --check --status "${dist_file}.sha256") \
  || die "s3://${BOSUN_BUCKET}/${BOSUN_DIST_KEY} does not match its SHA-256 in ${BOSUN_DIST_KEY}.sha256"
release="${RELEASES}/${digest}"
previous=$(readlink -e "${PREFIX}" || true)
changed=false     # this run installed a new release
reconfigured=false # this run changed a setting, key or the trust file

if [[ ! -e ${release}/bosun.mjs ]]; then
  log "unpacking release ${digest:0:12}"
  install -d -m 0755 "${RELEASES}"
  rm -rf -- "${release}.partial"
  install -d -m 0755 "${release}.partial"
  # npm pack puts the package in one top-level folder, package/.
  tar -xzf "${work}/${dist_file}" -C "${release}.partial" --strip-components=1 --no-same-owner --no-same-permissions
  [[ -e ${release}.partial/bosun.mjs && -d ${release}.partial/deploy/systemd ]] \
    || die "${BOSUN_DIST_KEY} holds no bosun.mjs and deploy/systemd: build it with npm run bundle"
  "${NODE}" "${release}.partial/bosun.mjs" --version >/dev/null \
    || die "the bundle in ${BOSUN_DIST_KEY} does not run on ${NODE}"
  chmod -R go-w "${release}.partial"
  rm -rf -- "${release}"
  mv -T -- "${release}.partial" "${release}"
fi

if [[ ${previous} != "${release}" ]]; then
  # An /opt/bosun that is a plain directory (an older manual install) is kept aside.
  if [[ -d ${PREFIX} && ! -L ${PREFIX} ]]; then
    mv -T -- "${PREFIX}" "${RELEASES}/manual-$(date +%Y%m%d%H%M%S)"
  fi
  # One rename(2) swaps the running version.
  rm -rf -- "${PREFIX}.new"
  ln -sfn -- "${release}" "${PREFIX}.new"
  mv -T -- "${PREFIX}.new" "${PREFIX}"
  changed=true
  log "Bosun at ${PREFIX} is now release ${digest:0:12}"
fi

# After an upgrade keep the new and the previous release (and any manual-*
# install) only, so going back is one symlink away.
if ${changed}; then
  while IFS= read -r -d '' dir; do
    [[ ${dir} == "${release}" || ${dir} == "${previous}" || ${dir##*/} == manual-* ]] || rm -rf -- "${dir}"
  done < <(find "${RELEASES}" -mindepth 1 -maxdepth 1 -type d -print0)
fi

# `bosun` for a person on the node: the bundle on that Node.js, with the units' flag.
printf '#!/bin/sh\nexec %s --max-semi-space-size=2 %s/bosun.mjs "$@"\n' "${NODE}" "${PREFIX}" >/usr/local/bin/bosun.new
chmod 0755 /usr/local/bin/bosun.new
mv -f -- /usr/local/bin/bosun.new /usr/local/bin/bosun

# ---- /etc/bosun: settings, keys, trust -------------------------------------------
install -d -m 0750 -o root -g bosun "${ETC}" "${ETC}/keys"

# write_file PATH MODE: stdin to PATH (owner root, group bosun) in one rename;
# notes whether the content changed, so the services can be restarted.
write_file() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"${tmp}"
  chown root:bosun "${tmp}"
  chmod "$2" "${tmp}"
  cmp -s -- "${tmp}" "$1" || reconfigured=true
  mv -f -- "${tmp}" "$1"
}

# fetch_key NAME: the SecureString /bosun/<cluster>/signing-keys/NAME to keys/NAME.pem.
fetch_key() {
  local name=$1 parameter="/bosun/${cluster}/signing-keys/$1"
  log "fetching signing key ${parameter}"
  (
    umask 077
    aws ssm get-parameter --region "${region}" --with-decryption \
      --name "${parameter}" --query Parameter.Value --output text >"${work}/key"
  ) || die "cannot read SSM parameter ${parameter}; create it (deploy/README.md, Keys)"
  [[ -s ${work}/key ]] || die "SSM parameter ${parameter} is empty"
  write_file "${ETC}/keys/${name}.pem" 0440 <"${work}/key"
  rm -f -- "${work}/key"
}

# Not a pipeline: write_file must run in this shell to record a change.
write_file "${ETC}/env" 0640 < <(
  printf '%s\n' "# Written by bosun-bootstrap; it is rewritten on every run." \
    "# These override /etc/bosun/bosun.json. Site settings belong in bosun.json." \
    "# Roles at the last run (a change restarts the services): ${roles_seen}" \
    "AWS_REGION=${region}" "BOSUN_CLUSTER=${cluster}" "BOSUN_BUCKET=${BOSUN_BUCKET}"
)

# An agent makes its own event key in /var/lib/bosun and registers its public half under its own
# prefix in the bucket (the node's IAM role can write nowhere else); no shared key to fetch.
if ${has_coordinator}; then
  fetch_key coordinator
  write_file "${ETC}/coordinator.env" 0640 <<EOF
# Written by bosun-bootstrap; read after /etc/bosun/env by bosun-coordinator.service.
BOSUN_KEY_ID=coordinator
BOSUN_SIGNING_KEY=${ETC}/keys/coordinator.pem
BOSUN_STATE_DIR=/var/lib/bosun-coordinator
EOF
fi
# Site settings are yours to edit; the services expect the file to exist.
if [[ ! -e ${ETC}/bosun.json ]]; then
  write_file "${ETC}/bosun.json" 0640 <<<'{}'
fi

# A private key stays only on a node whose roles use it (and the shared key of older versions goes).
rm -f -- "${ETC}/keys/fleet.pem"
if ! ${has_coordinator}; then
  rm -f -- "${ETC}/keys/coordinator.pem" "${ETC}/coordinator.env"
fi

# The trust file holds public keys only. dist/ is writable by the same people
# who can replace the Bosun code itself, so taking it from there trusts no one new.
if aws s3 cp --only-show-errors --region "${region}" \
  "s3://${BOSUN_BUCKET}/${BOSUN_TRUST_KEY}" "${work}/trust.json" 2>/dev/null; then
  "${NODE}" -e 'JSON.parse(require("fs").readFileSync(0, "utf8"))' \
    <"${work}/trust.json" || die "s3://${BOSUN_BUCKET}/${BOSUN_TRUST_KEY} is not valid JSON"
  write_file "${ETC}/trust.json" 0640 <"${work}/trust.json"
  log "installed ${ETC}/trust.json from s3://${BOSUN_BUCKET}/${BOSUN_TRUST_KEY}"
elif [[ -e ${ETC}/trust.json ]]; then
  log "no s3://${BOSUN_BUCKET}/${BOSUN_TRUST_KEY}; keeping the ${ETC}/trust.json in place"
else
  log "warning: no ${ETC}/trust.json and none at s3://${BOSUN_BUCKET}/${BOSUN_TRUST_KEY}"
fi

# ---- systemd ------------------------------------------------------------------
for unit in bosun-agent.service bosun-sync.service bosun-coordinator.service; do
  install -m 0644 "${PREFIX}/deploy/systemd/${unit}" "${UNIT_DIR}/${unit}"
done
systemctl daemon-reload

# converge UNIT WANTED [RESTART]: enable and start, or disable and stop. With
# RESTART=true a running unit is restarted when this run changed the release,
# a setting, a key or the trust file.
converge() {
  local unit=$1 wanted=$2 restart=${3:-true}
  if [[ ${wanted} == false ]]; then
    if systemctl is-enabled --quiet "${unit}" || systemctl is-active --quiet "${unit}"; then
      log "disabling ${unit}"
      systemctl disable --now "${unit}" || return 1
    fi
    return 0
  fi
  systemctl enable "${unit}" || return 1
  if ${restart} && { ${changed} || ${reconfigured}; } && systemctl is-active --quiet "${unit}"; then
    log "restarting ${unit} to apply the new release or settings"
    systemctl restart "${unit}" || return 1
  else
    systemctl start "${unit}" || return 1
  fi
}

if ${has_web}; then
  install -d -m 0755 -o bosun -g bosun /srv/www
fi
# bosun-sync runs once per boot; on an upgrade the running agent keeps the
# site current, so it is not run again. If it fails the agent still starts (it
# can apply the next release), and this script fails at the end. The sync
# itself retries a network blip (agent --sync-once --retry-for), then systemd
# starts it again.
sync_ok=true
converge bosun-sync.service "${has_web}" false || sync_ok=false
converge bosun-agent.service "${has_agent}"
converge bosun-coordinator.service "${has_coordinator}"
${sync_ok} || die "bosun-sync.service failed; see: journalctl -u bosun-sync.service"

log "done"
