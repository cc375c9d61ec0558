#!/usr/bin/env bash
# Bazel entry for fault_recovery_test.py (Bazel 4's py_test would need a Python toolchain).
exec python3 "$(dirname "$0")/fault_recovery_test.py" "$@"
