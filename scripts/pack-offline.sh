#!/usr/bin/env bash
# Packs optimer for an air-gapped site: the compiled CLI, its production node_modules (no dev
# tools), the proto and deploy files, and the nats-server .deb when one is at hand. Run it on a
# machine with the repository set up (scripts/setup.sh); it needs no network itself.
#   scripts/pack-offline.sh [OUT_DIR]   ->  OUT_DIR/optimer-offline-<version>.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)
version=$(node -p 'require("./package.json").version')
say() { printf 'pack-offline: %s\n' "$*" >&2; }

npx tsc -p tsconfig.build.json
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/optimer"
mkdir -p "$pkg"
cp -r dist proto deploy package.json package-lock.json README.md "$pkg/"
[ -d native/build ] && mkdir -p "$pkg/native" && cp -r native/build "$pkg/native/"
# node_modules without dev dependencies: copy (following the link, if it is one), then prune
# against the lockfile, offline
cp -rL node_modules "$pkg/node_modules"
(cd "$pkg" && npm prune --omit=dev --offline --no-audit --no-fund --ignore-scripts --loglevel=error)
rm -rf "$pkg/node_modules/.cache"

# nats-server: the .deb from $NATS_DEB, apt's cache, or `apt-get download` (needs a mirror)
deb=${NATS_DEB:-$(ls /var/cache/apt/archives/nats-server_*.deb 2>/dev/null | head -1 || true)}
if [ -z "$deb" ] && command -v apt-get >/dev/null; then
  (cd "$stage" && apt-get download nats-server >/dev/null 2>&1) && deb=$(ls "$stage"/nats-server_*.deb | head -1) || true
fi
if [ -n "$deb" ]; then cp "$deb" "$stage/"; else say "no nats-server .deb found (set NATS_DEB=...): the tarball needs one installed on site"; fi
cp scripts/install-offline.sh "$stage/"
tarball="$out/optimer-offline-$version.tar.gz"
tar -C "$stage" -czf "$tarball" .
say "wrote $tarball ($(du -h "$tarball" | cut -f1))"
echo "$tarball"
