#!/bin/bash
# Runs a static arm64 test program in two separate nested-KVM boots, carrying one file from the
# first to the second: a different kernel instance with a /dev/kvm created afresh, as a second
# host would be. The first boot exports the file (init_main.h ExportFile: base64 over the
# console, size and cksum checked by run_nested.sh); the second finds it in its initramfs as
# /files/<name> (init_main.h kImportDir).
#
#   tools/nested/run_two_boots.sh --carry NAME --first FILTER --second FILTER [options] BINARY
#
#   --carry NAME        the file boot 1 exports and boot 2 imports
#   --first FILTER      --gtest_filter of boot 1 (e.g. CrossHostTest.Phase1Export)
#   --second FILTER     --gtest_filter of boot 2
#   --cpu MODEL         QEMU -cpu of both boots (default: max)
#   --timeout SECONDS   limit for both boots together (default 480; each gets half)
#   --console-log PREFIX  keep the consoles as PREFIX.boot1.log and PREFIX.boot2.log
#
# Verdict: PASS (exit 0) only if both boots pass run_nested.sh's verdict. Under `bazel test`
# the two gtest XML reports are merged into $XML_OUTPUT_FILE, and both boots' exported files
# are kept in $TEST_UNDECLARED_OUTPUTS_DIR/boot1 and /boot2.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "run_two_boots: FAIL: $*" >&2; exit 1; }
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

carry="" first="" second="" cpu=max timeout_s=480 console_prefix=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --carry) carry="$2"; shift 2 ;;
    --first) first="$2"; shift 2 ;;
    --second) second="$2"; shift 2 ;;
    --cpu) cpu="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --console-log) console_prefix="$2"; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "run_two_boots: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[[ $# -eq 1 && -n "$carry" && -n "$first" && -n "$second" ]] || usage
binary="$1"

work="$(mktemp -d "${TMPDIR:-/tmp}/vexstate-two-boots.XXXXXX")"
trap 'rm -rf "$work"' EXIT
outputs="${TEST_UNDECLARED_OUTPUTS_DIR:-$work}"
per_boot=$((timeout_s / 2))

boot() {  # n filter [run_nested options...]
  local n="$1" filter="$2"
  shift 2
  local log=()
  [[ -z "$console_prefix" ]] || log=(--console-log "$console_prefix.boot$n.log")
  echo "run_two_boots: boot $n of 2 (--gtest_filter=$filter)" >&2
  XML_OUTPUT_FILE="$work/boot$n.xml" "$here/run_nested.sh" --cpu "$cpu" --timeout "$per_boot" \
    --export-dir "$outputs/boot$n" "${log[@]}" "$@" "$binary" -- "--gtest_filter=$filter"
}

boot 1 "$first" || fail "boot 1 failed (see above): nothing to carry"
[[ -f "$outputs/boot1/$carry" ]] || fail "boot 1 passed but exported no file named $carry"
boot 2 "$second" --file "$outputs/boot1/$carry" || fail "boot 2 failed (see above)"

if [[ -n "${XML_OUTPUT_FILE:-}" ]]; then
  # One report with both boots' test suites, so the test counts cover both.
  python3 - "$work/boot1.xml" "$work/boot2.xml" "$XML_OUTPUT_FILE" <<'EOF'
import sys
import xml.etree.ElementTree as ET
first, second = ET.parse(sys.argv[1]), ET.parse(sys.argv[2])
root = first.getroot()
for suite in second.getroot().findall("testsuite"):
    root.append(suite)
for key in ("tests", "failures", "disabled", "errors"):
    root.set(key, str(sum(int(s.get(key, "0")) for s in root.findall("testsuite"))))
first.write(sys.argv[3], encoding="UTF-8", xml_declaration=True)
EOF
fi
echo "run_two_boots: PASS ($(basename "$binary"): $carry carried from boot 1 to boot 2)" >&2
