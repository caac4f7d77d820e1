#!/usr/bin/env bash
# End to end, air-gapped: packs the tarball, installs it into a temp prefix and runs
# `optimer --version` and a tiny demo study there with no network (in a network namespace of
# its own when run as root, loopback only; otherwise with npm pointed at no registry).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(bash scripts/pack-offline.sh "$work" | tail -1)
body=$(cat <<SH
set -e
ip link set lo up 2>/dev/null || true
bash "$work/install-offline.sh" "$tarball" "$work/prefix" --no-nats
cd "$work"
"$work/prefix/bin/optimer" --version
"$work/prefix/bin/optimer" demo --out "$work/demo" --trials 6 --workers 1 --json > "$work/report.json"
node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); const s=r.report?.state ?? r.state; if (s!=="complete") { console.error("study not complete:", s); process.exit(1) } console.log("offline study:", s)' "$work/report.json"
SH
)
tar -C "$work" -xzf "$tarball" ./install-offline.sh
export npm_config_offline=true npm_config_registry=http://127.0.0.1:9/
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then unshare -n bash -c "$body"; else bash -c "$body"; fi
echo "check:offline: ok"
