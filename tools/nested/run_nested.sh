#!/bin/bash
# Runs a static arm64 test program as /init of an arm64 Linux with real KVM, inside
# qemu-system-aarch64 (software-emulated CPU with EL2), and turns its console into a verdict.
#
#   tools/nested/run_nested.sh [options] BINARY [-- INIT_ARGS...]
#
# Options:
#   --cpu MODEL         QEMU -cpu model (default: max; cortex-a72 = a host without FEAT_RAS/VHE)
#   --smp N             vCPUs of the emulated host (default 1)
#   --memory MIB        RAM of the emulated host (default 1024)
#   --timeout SECONDS   hard limit for the whole boot (default 240)
#   --file SRC[:DEST]   also pack SRC into the initramfs (default DEST: /files/<basename>)
#   --export-dir DIR    write files the program exported (init_main.h ExportFile) into DIR
#                       (default: $TEST_UNDECLARED_OUTPUTS_DIR under `bazel test`, else none)
#   --append ARGS       extra kernel command line (e.g. kvm-arm.mode=nvhe)
#   --no-gtest          BINARY is not a GoogleTest program: only the sentinel decides
#   --console-log FILE  also keep the raw console (CRs removed) in FILE
# INIT_ARGS reach the program's argv (after the kernel's `--`); e.g. --gtest_filter=Foo.*
#
# Verdict: PASS (exit 0) only if the console shows `VEXSTATE-INIT-EXIT 0` (printed by
# //tests/arm64:init_main just before power-off), no kernel panic, and, for a gtest program,
# a `[  PASSED  ]` summary with no `[  FAILED  ]` test. Anything else exits 1 with a
# `run_nested: FAIL:` line naming the cause (timeout, panic, missing sentinel, failed tests).
# Under `bazel test` the gtest XML report is copied to $XML_OUTPUT_FILE.
#
# Environment: see fetch_kernel.sh (VEXSTATE_ARM64_KERNEL, VEXSTATE_CACHE_DIR);
# QEMU_SYSTEM_AARCH64 overrides the emulator binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "run_nested: FAIL: $*" >&2; exit 1; }
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

cpu=max
smp=1
memory=1024
timeout_s=240
files=()
export_dir="${TEST_UNDECLARED_OUTPUTS_DIR:-}"
append=""
gtest=1
console_log=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) cpu="$2"; shift 2 ;;
    --smp) smp="$2"; shift 2 ;;
    --memory) memory="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --export-dir) export_dir="$2"; shift 2 ;;
    --append) append="$2"; shift 2 ;;
    --no-gtest) gtest=0; shift ;;
    --console-log) console_log="$2"; shift 2 ;;
    -h | --help) usage ;;
    --) break ;;
    -*) echo "run_nested: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || usage
binary="$1"
shift
[[ "${1:-}" != "--" ]] || shift
init_args=("$@")
for arg in "${init_args[@]}"; do
  # The kernel splits its command line at spaces and strips double quotes.
  [[ "$arg" != *[[:space:]\"]* ]] || fail "init argument '$arg' contains a space or a quote"
done

[[ -f "$binary" ]] || fail "test binary $binary: no such file"
file_type="$(head -c 20 "$binary" | od -An -tx1 | tr -d ' \n')"
# ELF magic, 64-bit, little-endian ... e_machine (bytes 18-19) = 0xb7 (EM_AARCH64).
[[ "$file_type" == 7f454c4602* && "${file_type:36:4}" == b700 ]] ||
  fail "$binary is not an aarch64 ELF (build it with --config=arm64)"

qemu="${QEMU_SYSTEM_AARCH64:-qemu-system-aarch64}"
command -v "$qemu" >/dev/null || fail "$qemu not found (apt-get install qemu-system-arm)"
kernel="$("$here/fetch_kernel.sh")" || fail "no arm64 kernel (see fetch_kernel.sh above)"

work="$(mktemp -d "${TMPDIR:-/tmp}/vexstate-nested.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"$here/make_initramfs.sh" "$work/initrd.cpio" "$binary" "${files[@]}"

# -cpu max's default pointer-authentication algorithm (QARMA5) triples boot time under TCG;
# the IMPDEF one is architecturally equivalent for everything we test.
case "$cpu" in
  max) cpu_arg="max,pauth-impdef=on" ;;
  *) cpu_arg="$cpu" ;;
esac
# VEXSTATE_NESTED_CPU=...: unknown name=value parameters become init's environment.
cmdline="console=ttyAMA0 panic=-1 quiet VEXSTATE_NESTED_CPU=$cpu $append"
if [[ ${#init_args[@]} -gt 0 ]]; then cmdline+=" -- ${init_args[*]}"; fi

echo "run_nested: $(basename "$binary") on -cpu $cpu_arg -smp $smp, kernel $(basename "$kernel"), timeout ${timeout_s}s" >&2
log="$work/console.log"
start_ns=$(date +%s%N)
set +e
# virtualization=on: EL2 for the emulated host, so its Linux runs KVM. gic-version=3: KVM's
# vGIC needs a GICv3 (with GICv2 the nested kernel has no usable virtual GIC here).
# -nic none: no default NIC, whose option ROM (efi-virtio.rom) Debian does not ship.
# -no-reboot: a panic (panic=-1 reboots) or power-off ends QEMU.
# The console loses CRs and colour escapes; exported-file lines (VXF ...) go to the log only.
timeout --kill-after=10 "$timeout_s" \
  "$qemu" -machine virt,virtualization=on,gic-version=3 -cpu "$cpu_arg" \
  -smp "$smp" -m "$memory" -nographic -no-reboot -nic none \
  -kernel "$kernel" -initrd "$work/initrd.cpio" -append "$cmdline" </dev/null 2>&1 |
  tr -d '\r' | sed -u 's/\x1b\[[0-9;]*m//g' | tee "$log" | grep -av --line-buffered '^VXF '
status=("${PIPESTATUS[@]}")
set -e
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
elapsed="$((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))s"
[[ -z "$console_log" ]] || cp "$log" "$console_log"

# Rebuilds each exported file from its BEGIN/VXF/END block and checks size and cksum.
extract_exports() {  # dir
  local dir="$1" name size sum
  mkdir -p "$dir"
  while read -r name size sum; do
    awk -v begin="VEXSTATE-FILE-BEGIN name=$name " -v end="VEXSTATE-FILE-END name=$name" '
      index($0, begin) == 1 { on = 1; next }
      on && $0 == end { exit }
      on && /^VXF / { print substr($0, 5) }' "$log" | base64 -d >"$dir/$name" 2>/dev/null ||
      fail "exported file $name: corrupt base64 on the console"
    [[ "$(cksum <"$dir/$name")" == "$sum $size" ]] ||
      fail "exported file $name: cksum/size mismatch (console line corrupted?)"
  done < <(sed -n 's/^VEXSTATE-FILE-BEGIN name=\([^ ]*\) size=\([0-9]*\) cksum=\([0-9]*\)$/\1 \2 \3/p' "$log")
}

echo "run_nested: qemu ran $elapsed" >&2
if [[ ${status[0]} -eq 124 || ${status[0]} -eq 137 ]]; then
  fail "timeout: no power-off within ${timeout_s}s (hung guest or test; raise --timeout?)"
fi
[[ ${status[0]} -eq 0 ]] || fail "$qemu exited with status ${status[0]} (see its message above)"
if grep -aq 'Kernel panic - not syncing' "$log"; then
  fail "kernel panic: $(grep -a -m1 'Kernel panic - not syncing' "$log")"
fi
exit_line="$(grep -aoE 'VEXSTATE-INIT-EXIT -?[0-9]+' "$log" | tail -n 1 || true)"
[[ -n "$exit_line" ]] || fail "no 'VEXSTATE-INIT-EXIT <status>' line: /init did not finish (does it link //tests/arm64:init_main?)"
exit_code="${exit_line##* }"

exports="${export_dir:-$work/exports}"
extract_exports "$exports"
if [[ -n "${XML_OUTPUT_FILE:-}" && -f "$exports/test.xml" ]]; then
  cp "$exports/test.xml" "$XML_OUTPUT_FILE"
fi

if [[ $gtest -eq 1 ]]; then
  summary="$(grep -aE '^\[==========\] [0-9]+ tests? from [0-9]+ test (suites?|cases?) ran' "$log" | tail -n 1 || true)"
  [[ -n "$summary" ]] || fail "no GoogleTest summary on the console (exit status $exit_code)"
  if grep -aqE '^\[  FAILED  \] [0-9]+ tests?, listed below' "$log"; then
    fail "$(grep -aE '^\[  FAILED  \] [0-9]+ tests?, listed below' "$log" | tail -n 1 | sed 's/, listed below://') in the nested boot (exit status $exit_code)"
  fi
  grep -aqE '^\[  PASSED  \] [0-9]+ tests?\.' "$log" || fail "no '[  PASSED  ]' line (exit status $exit_code)"
fi
[[ "$exit_code" == 0 ]] || fail "/init reported exit status $exit_code"
echo "run_nested: PASS ($(basename "$binary"), -cpu $cpu, $elapsed)" >&2
