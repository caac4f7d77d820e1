#!/usr/bin/env bash
# Installs an optimer offline tarball (from scripts/pack-offline.sh) with no network: unpacks
# it under PREFIX/lib/optimer, links PREFIX/bin/optimer, and installs the bundled nats-server
# .deb when run as root on a machine without nats-server (--no-nats skips that).
#   install-offline.sh TARBALL [PREFIX=/opt/optimer-root] [--no-nats]
set -euo pipefail
tarball=${1:?usage: install-offline.sh TARBALL [PREFIX] [--no-nats]}
prefix=${2:-/usr/local}
nats=yes
[ "${3:-}" = "--no-nats" ] && nats=no
say() { printf 'install-offline: %s\n' "$*" >&2; }
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$major" -ge 20 ] || { say "optimer needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))"; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$stage" -xzf "$tarball"
mkdir -p "$prefix/lib" "$prefix/bin"
rm -rf "$prefix/lib/optimer"
mv "$stage/optimer" "$prefix/lib/optimer"
cat > "$prefix/bin/optimer" <<WRAP
#!/bin/sh
exec node "$prefix/lib/optimer/dist/cli/main.js" "\$@"
WRAP
chmod +x "$prefix/bin/optimer"

if [ "$nats" = yes ] && ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  deb=$(ls "$stage"/nats-server_*.deb 2>/dev/null | head -1 || true)
  if [ -n "$deb" ] && [ "$(id -u)" -eq 0 ]; then dpkg -i "$deb" >/dev/null; else say "install nats-server yourself (the .deb is in the tarball): dpkg -i nats-server_*.deb"; fi
fi
say "installed: $prefix/bin/optimer ($("$prefix/bin/optimer" --version))"
