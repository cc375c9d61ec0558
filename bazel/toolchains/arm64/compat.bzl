"""`target_compatible_with` values for targets that only make sense on one side.

    cc_test(name = "x", ..., target_compatible_with = ARM64_ONLY)

ARM64_ONLY: aarch64 code (inline asm, arm64 KVM structs); skipped by a host `bazel build
//...`, built by `--config=arm64` and by nested_kvm_test's transition.
HOST_ONLY: targets that run on the x86_64 host (e.g. the nested-KVM harness itself); skipped
by `--config=arm64`, whose `test:arm64 --run_under=qemu-aarch64-static` could not run them.
"""

ARM64_ONLY = select({
    "//bazel:aarch64": [],
    "//conditions:default": ["//bazel/toolchains/arm64:incompatible"],
})

HOST_ONLY = select({
    "//bazel:aarch64": ["//bazel/toolchains/arm64:incompatible"],
    "//conditions:default": [],
})
