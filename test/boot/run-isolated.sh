#!/bin/bash
# Runs deploy/user-data/bootstrap.sh as root in a mount namespace of its own (unshare --mount),
# where /etc, /opt, /usr/local, /var and /srv are overlays whose changes land in $1/<dir>: the
# real tools (useradd, install, tar, sha256sum) run on this machine's Debian, and nothing
# outside $1 changes. The network and systemd are the stubs in stubs/ (on the PATH first).
# Usage: run-isolated.sh ROOT BOOTSTRAP  (inside: unshare --mount --propagation private)
set -euo pipefail
root=$1 bootstrap=$2
for dir in etc opt usr/local var srv; do
  mkdir -p "${root}/upper/${dir}" "${root}/work/${dir}"
  mount -t overlay overlay -o "lowerdir=/${dir},upperdir=${root}/upper/${dir},workdir=${root}/work/${dir}" "/${dir}"
done
rc=0
bash "${bootstrap}" || rc=$?
if ((rc == 0)); then
  # What a person on the node runs.
  /usr/local/bin/bosun --version >"${root}/bosun-version.txt"
fi
exit "${rc}"
