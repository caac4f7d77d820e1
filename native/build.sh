#!/usr/bin/env bash
# Builds optimer's optional native kernels (native/build/optimer_kernels.node) from source with the system's C++
# compiler and Node's headers (or native/napi-min.h where Node's headers are not installed). Quiet and fast when
# up to date; when it cannot build, it says so in one line and exits 0: optimer then runs its JavaScript kernels,
# with the same results. OPTIMER_NATIVE=0 skips the build (and, at run time, the addon).
set -uo pipefail
cd "$(dirname "$0")"
out=build/optimer_kernels.node
[ "${OPTIMER_NATIVE:-1}" = "0" ] && exit 0
if [ -f "$out" ] && [ "$out" -nt kernels.cc ] && [ "$out" -nt napi-min.h ] && [ "$out" -nt build.sh ]; then exit 0; fi
cxx=${CXX:-}
if [ -z "$cxx" ]; then cxx=$(command -v g++ || command -v clang++ || command -v c++ || true); fi
if [ -z "$cxx" ]; then
  echo "setup: no C++ compiler found: using the JavaScript kernels (slower merge and pool build; install g++ for the native ones)" >&2
  exit 0
fi
inc=()
prefix=$(dirname "$(dirname "$(node -p process.execPath)")")
for d in "$prefix/include/node" /usr/include/node /usr/local/include/node; do
  if [ -f "$d/node_api.h" ]; then inc=(-I "$d"); break; fi
done
mkdir -p build
tmp="build/.optimer_kernels.$$.node"
# -ffp-contract=off: no FMA contraction, so results stay bit-identical to the JavaScript kernels
if log=$("$cxx" -std=c++17 -O3 -fPIC -shared -pthread -ffp-contract=off -fno-fast-math -fvisibility=hidden \
  "${inc[@]}" kernels.cc -o "$tmp" 2>&1) && node -e "require(process.argv[1])" "$PWD/$tmp" 2>/dev/null; then
  mv -f "$tmp" "$out"
else
  rm -f "$tmp"
  echo "setup: the native kernels did not build ($(printf '%s' "$log" | grep -m1 -i error || echo 'it does not load')): using the JavaScript kernels" >&2
fi
exit 0
