#!/usr/bin/env python3
"""Turns test runner output into the plain CI line "N passed, N failed".

Inputs are log files of `bazel test` runs and of the nested arm64 harness. For every Bazel
test target in a log, the gtest XML report (test.xml under --testlogs) gives the number of
test cases; a target without a report (crashed, timed out, failed to build) counts as one
failure. Lines of the form "NESTED-RESULT <name> PASSED|FAILED cases=<n> failed=<m>" from the
nested harness are counted the same way.
"""
import argparse
import os
import re
import sys
import xml.etree.ElementTree as ET

TARGET_LINE = re.compile(r"^(//\S+)\s+(PASSED|FAILED|TIMEOUT|FLAKY|NO STATUS|FAILED TO BUILD)\b")
NESTED_LINE = re.compile(r"^NESTED-RESULT (\S+) (PASSED|FAILED) cases=(\d+) failed=(\d+)")


def cases_from_xml(testlogs, target):
    pkg, name = target[2:].split(":")
    path = os.path.join(testlogs, pkg, name, "test.xml")
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    total = failed = 0
    for case in root.iter("testcase"):
        if case.get("status") == "notrun":
            continue
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
    return total, failed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--testlogs", default=".bazel/testlogs")
    parser.add_argument("logs", nargs="+")
    args = parser.parse_args()
    passed = failed = 0
    failures = []
    for log in args.logs:
        with open(log, errors="replace") as f:
            for line in f:
                line = line.rstrip()
                m = TARGET_LINE.match(line)
                if m:
                    target, result = m.group(1), m.group(2)
                    counts = cases_from_xml(args.testlogs, target) if result in ("PASSED", "FAILED", "FLAKY") else None
                    if counts and counts[0] > 0:
                        passed += counts[0] - counts[1]
                        failed += counts[1]
                        if result != "PASSED" and counts[1] == 0:
                            failed += 1  # the target failed outside any test case
                    elif result in ("PASSED", "FLAKY"):
                        passed += 1
                    else:
                        failed += 1
                    if result not in ("PASSED", "FLAKY"):
                        failures.append(f"{target} {result}")
                    continue
                m = NESTED_LINE.match(line)
                if m:
                    cases, bad = int(m.group(3)), int(m.group(4))
                    if m.group(2) == "FAILED" and bad == 0:
                        bad = 1
                        cases = max(cases, 1)
                    passed += cases - bad
                    failed += bad
                    if m.group(2) != "PASSED":
                        failures.append(f"{m.group(1)} (nested arm64) FAILED")
    for f in failures:
        print(f"FAILED: {f}")
    if passed + failed == 0:
        print("no test ran", file=sys.stderr)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
