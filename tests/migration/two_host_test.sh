#!/usr/bin/env bash
# Bazel entry for two_host_test.py (Bazel 4's py_test would need a Python toolchain).
exec python3 "$(dirname "$0")/two_host_test.py" "$@"
