#!/bin/bash
# Prints the path of a Debian arm64 kernel Image for the nested-KVM boot, downloading it first
# if the cache lacks it. Quiet (only the path on stdout) when the kernel is already cached.
#
#   tools/nested/fetch_kernel.sh            # resolve, fetch if needed, print the Image path
#
# The version is whatever Debian's `linux-image-arm64:arm64` metapackage depends on now, so an
# `apt-get update` moves us to the next point release the same way it moves a Debian host.
# Its config has CONFIG_KVM=y, CONFIG_ARM64_RAS_EXTN=y, PL011 console and DEVTMPFS built in:
# no modules are needed. `boot/vmlinuz-*` in the .deb is an uncompressed arm64 Image.
#
# Environment:
#   VEXSTATE_ARM64_KERNEL  use this Image, skip everything else
#   VEXSTATE_CACHE_DIR     cache root (default: <login home>/.cache/vexstate, even when HOME
#                          is overridden as under `bazel test`, so every run shares one copy)
# Needs: apt-cache, apt-get and dpkg-deb, and `dpkg --add-architecture arm64 && apt-get update`
# once (`./vexstate deps`). Offline with lists missing, the newest cached kernel is used.
set -euo pipefail

die() { echo "fetch_kernel: $*" >&2; exit 1; }

if [[ -n "${VEXSTATE_ARM64_KERNEL:-}" ]]; then
  [[ -f "$VEXSTATE_ARM64_KERNEL" ]] || die "VEXSTATE_ARM64_KERNEL=$VEXSTATE_ARM64_KERNEL: no such file"
  echo "$VEXSTATE_ARM64_KERNEL"
  exit 0
fi

login_home="$(getent passwd "$(id -u)" | cut -d: -f6)"
cache="${VEXSTATE_CACHE_DIR:-${login_home:-$HOME}/.cache/vexstate}/arm64-kernel"
mkdir -p "$cache" || die "cannot create the cache directory $cache"

newest_cached() {
  find "$cache" -path "$cache/linux-image-*/boot/vmlinuz-*" -type f 2>/dev/null | sort -V | tail -n 1
}

# "Depends: linux-image-6.1.0-56-arm64:arm64" -> linux-image-6.1.0-56-arm64.
# apt-cache takes ~2 s with two architectures' lists, so the answer is remembered until the
# package lists change (`apt-get update` renames files into /var/lib/apt/lists).
resolved="$cache/resolved-package"
if [[ -s "$resolved" && "$resolved" -nt /var/lib/apt/lists ]]; then
  package="$(cat "$resolved")"
else
  package="$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[^:]*\)\(:arm64\)\?$/\1/p' | head -n 1 || true)"
  if [[ -n "$package" ]]; then
    echo "$package" >"$resolved.$$" && mv "$resolved.$$" "$resolved"
  fi
fi
if [[ -z "$package" ]]; then
  cached="$(newest_cached)"
  [[ -n "$cached" ]] || die "cannot resolve linux-image-arm64:arm64 (run: dpkg --add-architecture arm64 && apt-get update) and no kernel is cached in $cache"
  echo "fetch_kernel: apt-cache cannot resolve linux-image-arm64:arm64; using cached $cached" >&2
  echo "$cached"
  exit 0
fi

version="${package#linux-image-}"
image="$cache/$package/boot/vmlinuz-$version"
if [[ -f "$image" ]]; then
  echo "$image"
  exit 0
fi

# Parallel test runs may all arrive here: one downloads, the others wait and reuse it.
exec 9>"$cache/.lock"
flock 9
if [[ ! -f "$image" ]]; then
  work="$(mktemp -d "$cache/.fetch.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  echo "fetch_kernel: downloading $package:arm64 into $cache" >&2
  if ! (cd "$work" && apt-get download "$package:arm64") >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    die "apt-get download $package:arm64 failed"
  fi
  dpkg-deb -x "$work"/"$package"_*_arm64.deb "$work/tree" ||
    die "dpkg-deb -x of $(ls "$work"/*.deb) failed"
  [[ -f "$work/tree/boot/vmlinuz-$version" ]] || die "$package has no boot/vmlinuz-$version"
  # Only the Image is needed (no modules): keep boot/, drop the rest (~300 MB unpacked).
  mkdir -p "$work/keep"
  mv "$work/tree/boot" "$work/keep/boot"
  rm -rf "${cache:?}/$package"
  mv "$work/keep" "$cache/$package"  # atomic: readers never see a half-unpacked kernel
fi
echo "$image"
