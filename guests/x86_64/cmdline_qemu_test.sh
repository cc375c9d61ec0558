#!/bin/bash
# Runs cmdline_qemu_test.py with the system Python 3 (a py_test would need a Python toolchain
# that Bazel 4 may try to download).
exec /usr/bin/python3 "$(dirname "$0")/cmdline_qemu_test.py" "$@"
