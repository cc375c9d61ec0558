#!/bin/bash
# Builds every nested arm64 KVM test (--config=arm64) and runs each in its nested boot(s), one
# after the other; prints one line per test on stdout, for people and tools/test_summary.py:
#
#   NESTED-RESULT <name> PASSED|FAILED cases=<n> failed=<m>
#
# <n> and <m> come from the GoogleTest output inside the guest (tests that ran to a verdict, and
# those that failed; a boot that dies mid-test counts the unfinished test as failed). Consoles
# and the build log go to files (default /tmp/vexstate-nested/<name>.log); a failure also
# prints the harness's reason and the failed test names.
#
#   tools/nested/run_nested_tests.sh [NAME...]     # default: all; NAME as in the table below
#
# The tests are the Bazel targets tagged `nested_kvm` (nested_kvm_test in tests/arm64/nested.bzl,
# nested_two_boots_test in tests/arm64/nested_two_boots.bzl): their binary, -cpu, -smp, test
# arguments, extra files and size are read from `bazel query`, so the BUILD files stay the one
# place that defines them. Each runs here exactly as `bazel test` would run it, but from the
# --config=arm64 build and without Bazel's test runner.
#
# Environment:
#   VEXSTATE_NESTED_LOGS      log directory (default /tmp/vexstate-nested)
#   VEXSTATE_BAZEL_STARTUP    bazel startup options, e.g. "--output_base=/root/.cache/bazel-x"
# Exit status: 0 only if every test passed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tools/nested"
logs="${VEXSTATE_NESTED_LOGS:-/tmp/vexstate-nested}"
# shellcheck disable=SC2206  # word splitting of the startup options is intended
bazel=(bazel ${VEXSTATE_BAZEL_STARTUP:-})
# No .bazel/ convenience links: they would follow this arm64 build, under other users' feet.
build_flags=(--config=arm64 --symlink_prefix=/)
mkdir -p "$logs"
cd "$root" || exit 1

say() { echo "run_nested_tests: $*" >&2; }

# name kind binary cpu smp timeout args extra_files kernel_args carry first second, separated by
# US (0x1f: not whitespace, so `read` keeps empty fields); list values space-separated.
plan="$logs/plan.txt"
if ! "${bazel[@]}" query --output=xml 'attr(tags, "\bnested_kvm\b", tests(//...))' 2>"$logs/query.log" |
  python3 -c '
import sys
import xml.etree.ElementTree as ET

TIMEOUTS = {"small": 60, "medium": 300, "large": 900, "enormous": 3600}

def attr(rule, name, default=""):
    for child in rule:
        if child.get("name") == name:
            if child.tag == "list":
                return " ".join(item.get("value") for item in child)
            return child.get("value")
    return default

for rule in ET.parse(sys.stdin).getroot().findall("rule"):
    kind = {"_nested_kvm_test": "one", "_nested_two_boots_test": "two"}.get(rule.get("class"))
    if kind is None:
        sys.exit("unknown nested test rule %s for %s" % (rule.get("class"), rule.get("name")))
    print("\x1f".join([
        rule.get("name").split(":")[1], kind, attr(rule, "binary"), attr(rule, "cpu", "max"),
        attr(rule, "smp", "1"), str(TIMEOUTS.get(attr(rule, "size", "medium"), 300)),
        attr(rule, "args"), attr(rule, "extra_files"), attr(rule, "kernel_args"),
        attr(rule, "carry"), attr(rule, "first"), attr(rule, "second")]))
' >"$plan"; then
  say "bazel query for the nested tests failed (see $logs/query.log)"
  tail -5 "$logs/query.log" >&2
  echo "NESTED-RESULT bazel-query FAILED cases=0 failed=1"
  exit 1
fi

selected=("$@")
wanted() {  # name
  [[ ${#selected[@]} -eq 0 ]] && return 0
  local s
  for s in "${selected[@]}"; do [[ "$s" == "$1" ]] && return 0; done
  return 1
}

for s in "${selected[@]}"; do
  if ! cut -d$'\x1f' -f1 "$plan" | grep -qxF -- "$s"; then
    say "no nested test named $s (known: $(cut -d$'\x1f' -f1 "$plan" | tr '\n' ' '))"
    exit 2
  fi
done

# Builds the binaries the selected tests need.
binaries=()
while IFS=$'\x1f' read -r name _ binary _; do
  wanted "$name" && binaries+=("$binary")
done <"$plan"
if [[ ${#binaries[@]} -eq 0 ]]; then
  say "bazel query found no nested tests"
  echo "NESTED-RESULT bazel-query FAILED cases=0 failed=1"
  exit 1
fi
mapfile -t binaries < <(printf '%s\n' "${binaries[@]}" | sort -u)
say "building ${#binaries[@]} aarch64 test binaries (log: $logs/build.log)"
build_ok=1
"${bazel[@]}" build "${build_flags[@]}" "${binaries[@]}" >"$logs/build.log" 2>&1 || build_ok=0
bin_dir="$("${bazel[@]}" info "${build_flags[@]}" bazel-bin 2>/dev/null)"

label_path() {  # //pkg:name -> pkg/name, in the source tree or the arm64 output tree
  local label="${1#//}" path
  path="${label%%:*}/${label#*:}"
  if [[ -e "$root/$path" ]]; then echo "$root/$path"; else echo "$bin_dir/$path"; fi
}

# "<cases> <failed>" from GoogleTest console output on stdin.
count_results() {
  awk '
    /^\[==========\] [0-9]+ tests? from .* ran\./ { ran += $2; summaries++ }
    /^\[  SKIPPED \] [0-9]+ tests?, listed below/ { skipped += $4 }
    /^\[  FAILED  \] [0-9]+ tests?, listed below/ { failed += $4 }
    /^\[ RUN      \]/ { runs++ }
    /^\[       OK \]/ { oks++ }
    /^\[  SKIPPED \] [^ ]+\.[^ ]+ \(/ { skips++ }
    END {
      # A boot without a summary died mid-run: every started test that did not end OK or
      # skipped is a failure.
      if (summaries == 0) { ran = runs; skipped = skips; failed = runs - oks - skips }
      printf "%d %d\n", ran - skipped, failed
    }'
}

overall=0
while IFS=$'\x1f' read -r name kind binary cpu smp timeout args extra kernel_args carry first second; do
  wanted "$name" || continue
  log="$logs/$name.log"
  consoles=()
  status=1
  if [[ $build_ok -eq 1 ]]; then
    say "$name: -cpu $cpu ($log)"
    # The harness's limit: the test size's timeout minus 15 s, as the Bazel rules compute it.
    limit=$((timeout > 60 ? timeout - 15 : timeout))
    if [[ "$kind" == one ]]; then
      harness=("$here/run_nested.sh" --cpu "$cpu" --smp "$smp" --timeout "$limit"
        --export-dir "$logs/$name.exports" --console-log "$log.console")
      for f in $extra; do harness+=(--file "$(label_path "$f")"); done
      [[ -z "$kernel_args" ]] || harness+=(--append "$kernel_args")
      # shellcheck disable=SC2086  # args are separate words (no spaces inside: run_nested.sh checks)
      "${harness[@]}" "$(label_path "$binary")" -- $args >"$log" 2>&1
      status=$?
      consoles=("$log.console")
    else
      "$here/run_two_boots.sh" --carry "$carry" --first "$first" --second "$second" --cpu "$cpu" \
        --timeout "$limit" --console-log "$log.console" "$(label_path "$binary")" >"$log" 2>&1
      status=$?
      consoles=("$log.console.boot1.log" "$log.console.boot2.log")
    fi
  else
    echo "build failed: see $logs/build.log" >"$log"
  fi
  read -r cases failed < <(cat "${consoles[@]}" 2>/dev/null | count_results)
  if [[ $status -eq 0 && $failed -eq 0 ]]; then
    echo "NESTED-RESULT $name PASSED cases=$cases failed=$failed"
  else
    [[ $failed -gt 0 ]] || failed=1
    echo "NESTED-RESULT $name FAILED cases=$cases failed=$failed"
    overall=1
    grep -a -h 'FAIL:\|^\[  FAILED  \] [^ ]*\.[^ ]* (' "$log" "${consoles[@]}" 2>/dev/null | sort -u | sed 's/^/  /'
    say "$name: console in ${consoles[*]:-$log}, harness log in $log"
  fi
done <"$plan"

if [[ $build_ok -eq 0 ]]; then
  say "the arm64 build failed:"
  grep -a -m 20 'error' "$logs/build.log" >&2
fi
exit $overall
