#!/bin/sh
echo "bazel coverage is unavailable in this offline build" >&2
exit 1
