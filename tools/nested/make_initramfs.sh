#!/bin/bash
# Packs a static arm64 program as /init of an initramfs (cpio "newc", uncompressed).
#
#   tools/nested/make_initramfs.sh OUT.cpio INIT_BINARY [SRC[:DEST]]...
#
# Each extra SRC is copied to DEST inside the initramfs (an absolute path; default
# /files/<basename of SRC>, see kImportDir in tests/arm64/init_main.h). Empty /proc, /sys, /tmp
# and /files directories are always present.
#
# /dev/console is a character device (5, 1). Creating one with mknod needs privileges that a
# Bazel sandbox does not have, so it is not made on disk: a second, hand-written newc archive
# holding /dev and /dev/console is prepended. The kernel unpacks concatenated cpio archives
# in order (Documentation/driver-api/early-userspace/buffer-format.rst), and with the node
# present it opens the console for init before init runs, so even init's first writes show.
set -euo pipefail

die() { echo "make_initramfs: $*" >&2; exit 1; }

[[ $# -ge 2 ]] || die "usage: make_initramfs.sh OUT.cpio INIT_BINARY [SRC[:DEST]]..."
out="$1"
init="$2"
shift 2
[[ -f "$init" ]] || die "init binary $init: no such file"

# One newc entry without data: header fields are 8 hex digits (buffer-format.rst), the name
# is NUL-terminated and padded so that header + name is a multiple of 4 bytes.
newc_entry() {  # name mode rdevmajor rdevminor
  local name="$1" mode="$2" rmaj="$3" rmin="$4"
  local namesize=$((${#name} + 1))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    0 "$mode" 0 0 1 0 0 0 0 "$rmaj" "$rmin" "$namesize" 0
  printf '%s\0' "$name"
  local pad=$(((4 - (110 + namesize) % 4) % 4))
  ((pad == 0)) || head -c "$pad" /dev/zero
}

stage="$(mktemp -d "${TMPDIR:-/tmp}/vexstate-initramfs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/proc" "$stage/sys" "$stage/tmp" "$stage/files"
cp "$init" "$stage/init"
chmod 0755 "$stage/init"
for spec in "$@"; do
  src="${spec%%:*}"
  if [[ "$spec" == *:* ]]; then dest="${spec#*:}"; else dest="/files/$(basename "$src")"; fi
  [[ -f "$src" ]] || die "extra file $src: no such file"
  [[ "$dest" == /* && "$dest" != */../* && "$dest" != /init ]] ||
    die "extra file destination '$dest' must be an absolute path, not /init, without '..'"
  mkdir -p "$stage$(dirname "$dest")"
  cp "$src" "$stage$dest"
done

{
  newc_entry dev $((8#040755)) 0 0
  newc_entry dev/console $((8#020600)) 5 1
  newc_entry 'TRAILER!!!' 0 0 0
  # --reproducible: inode numbers and mtimes do not depend on the staging directory.
  (cd "$stage" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio --quiet -o -H newc --owner=0:0 --reproducible)
} >"$out.tmp" || die "writing $out failed"
mv "$out.tmp" "$out"
