#!/usr/bin/env bash
# Installs and starts what Cumulus needs on a Debian machine, idempotently:
#   Debian packages, a venv with the package, a Docker engine, the function runtime image.
# Used by `make up` and `make test`; safe to run again (each step checks before it acts).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/cumulus-docker.sock}
APT_PACKAGES=(docker.io iptables mmdebstrap postgresql nats-server wrk qemu-system-x86 qemu-utils busybox-static ${CUMULUS_EXTRA_APT:-})

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The qemu provider downloads Debian's kernel package with apt: it needs the package lists.
if ! apt-cache policy linux-image-amd64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  log "refreshing apt's package lists"
  as_root apt-get update -qq
fi

stamp="$VENV/.cumulus-installed"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages into $VENV"
  pip_log=$(mktemp)
  if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[control-plane,plot,dev]'; } >"$pip_log" 2>&1; then
    cat "$pip_log" >&2; log "pip install failed"; exit 1
  fi
  rm -f "$pip_log"
  echo "$want" > "$stamp"
fi

engine_ok() { timeout 10 "$VENV/bin/python" -c 'import docker; docker.from_env().ping()' 2>/dev/null; }
if ! engine_ok; then
  sock=${DOCKER_HOST#unix://}
  log "starting a Docker engine on $sock"
  as_root sh -c "dockerd --host unix://$sock --data-root /var/lib/cumulus-docker \
      --exec-root /run/cumulus-docker-exec --pidfile /run/cumulus-docker.pid \
      >>/var/log/cumulus-dockerd.log 2>&1 &"
  for _ in $(seq 1 60); do engine_ok && break; sleep 0.5; done
  engine_ok || { log "the Docker engine did not start; see /var/log/cumulus-dockerd.log"; exit 1; }
fi

"$VENV/bin/python" - <<'PY'
import logging, docker
from node_agent.image import ensure_runtime_image
logging.basicConfig(level=logging.INFO, format="[bootstrap] %(message)s")
print("[bootstrap] runtime image:", ensure_runtime_image(docker.from_env()))
PY
