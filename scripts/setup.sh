#!/usr/bin/env bash
# One-time (and idempotent) set-up: npm packages, nats-server, and the compiled CLI.
# Fast when everything is already in place, so `npm run demo` and `npm test` call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }

# --- Node.js --------------------------------------------------------------------------------
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  say "optimer needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))"
  exit 1
fi

# --- npm packages ---------------------------------------------------------------------------
# onnxruntime-node's install script downloads CUDA providers from the internet: skip it (the CPU
# and WebGPU providers ship inside the package). npm 11 honours "allowScripts" in package.json;
# npm 10 ignores it, so the variable below covers that case. GPU workers: see deploy/gpu-worker.md.
export ONNXRUNTIME_NODE_INSTALL=skip
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# Debian packages: apt-get as root, or through a password-less sudo; says so when it cannot.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else return 1; fi
  fi
  say "installing $* (Debian packages)"
  $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { say "apt-get could not install $*"; return 1; }
}

# --- nats-server (the distributed search's message broker) ----------------------------------
find_nats() { command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true; }
if [ -z "$(find_nats)" ]; then
  apt_install nats-server || true
  if [ -z "$(find_nats)" ]; then
    say "nats-server is not installed and could not be installed here."
    say "  Debian/Ubuntu: sudo apt-get install nats-server   (installs /usr/sbin/nats-server)"
    say "  elsewhere: put a nats-server 2.9+ binary on PATH, or set OPTIMER_NATS_SERVER=/path/to/nats-server"
    say "  (pool, eval, export and the demo work without it; the distributed search needs it)"
  fi
fi

# --- Chromium, for the dashboard's browser tests only (`setup.sh --for-tests`, as `npm test` runs it) ---
if [ "${1:-}" = "--for-tests" ] && [ ! -x "${OPTIMER_CHROMIUM:-/usr/bin/chromium}" ]; then
  apt_install chromium || say "chromium is not installed: the dashboard's browser tests will fail (Debian: apt-get install chromium, or set OPTIMER_CHROMIUM)"
fi

# --- native kernels (optional: a failed or impossible build says so in one line, the JS kernels run) ---
bash native/build.sh || true

# --- compile ---------------------------------------------------------------------------------
node node_modules/typescript/bin/tsc -p tsconfig.build.json
chmod +x dist/cli/main.js
