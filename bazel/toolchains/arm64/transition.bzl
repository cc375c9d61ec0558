"""A Starlark transition into the arm64 cross configuration (what `--config=arm64` sets).

Lets a host-side rule depend on an aarch64 build of a target in the same `bazel` invocation:

    attr.label(cfg = arm64_transition, ...)
    "_allowlist_function_transition": attr.label(default = ALLOWLIST)

Bazel 4.2.3 without platforms-based C++ toolchain resolution selects the C++ toolchain from
--crosstool_top and --cpu, and both are ordinary build options that a user-defined transition
may set. Keep the values in step with the `build:arm64` lines of //:.bazelrc.

--host_crosstool_top stays the local toolchain: tools built for the exec side of the
transitioned targets (protoc plugins, ...) must remain x86_64 binaries.
"""

ALLOWLIST = "@bazel_tools//tools/allowlists/function_transition_allowlist"

_FEATURES = "//command_line_option:features"

def _arm64_transition_impl(settings, attr):
    features = [f for f in settings[_FEATURES] if f != "fully_static_link"]
    return {
        "//command_line_option:cpu": "aarch64",
        "//command_line_option:crosstool_top": "//bazel/toolchains/arm64:suite",
        "//command_line_option:host_crosstool_top": "@bazel_tools//tools/cpp:toolchain",
        # Static: the binary becomes /init of an initramfs that holds nothing else.
        "//command_line_option:dynamic_mode": "off",
        _FEATURES: features + ["fully_static_link"],
    }

arm64_transition = transition(
    implementation = _arm64_transition_impl,
    inputs = [_FEATURES],
    outputs = [
        "//command_line_option:cpu",
        "//command_line_option:crosstool_top",
        "//command_line_option:host_crosstool_top",
        "//command_line_option:dynamic_mode",
        _FEATURES,
    ],
)
