"""A legacy (crosstool) C++ toolchain config for Debian's aarch64-linux-gnu cross GCC.

Why legacy and not platforms: Bazel 4.2.3 still selects C++ toolchains through
--crosstool_top/--cpu unless --incompatible_enable_cc_toolchain_resolution is set, and the
platforms variant needs --crosstool_top anyway (see ../../../../shared/notes/build.md).

This config declares only tool paths and flag features. It does not set `no_legacy_features`,
so Bazel adds its built-in action configs and features (includes, defines, user flags,
libraries_to_link, `fully_static_link`, ...) exactly as for the host toolchain. No sysroot:
Debian's cross GCC searches /usr/aarch64-linux-gnu/include, then the multiarch
/usr/include/aarch64-linux-gnu and /usr/include, and links from /usr/lib/aarch64-linux-gnu,
which is where the `:arm64` -dev packages install.
"""

load(
    "@bazel_tools//tools/cpp:cc_toolchain_config_lib.bzl",
    "feature",
    "flag_group",
    "flag_set",
    "tool_path",
    "with_feature_set",
)
load("@bazel_tools//tools/build_defs/cc:action_names.bzl", "ACTION_NAMES")

_COMPILE_ACTIONS = [
    ACTION_NAMES.assemble,
    ACTION_NAMES.preprocess_assemble,
    ACTION_NAMES.c_compile,
    ACTION_NAMES.cpp_compile,
    ACTION_NAMES.cpp_header_parsing,
    ACTION_NAMES.cpp_module_compile,
    ACTION_NAMES.linkstamp_compile,
]

_LINK_ACTIONS = [
    ACTION_NAMES.cpp_link_executable,
    ACTION_NAMES.cpp_link_dynamic_library,
    ACTION_NAMES.cpp_link_nodeps_dynamic_library,
]

def _flags_feature(name, actions, flags, enabled = True, when = None):
    """A feature that adds `flags` to `actions` (only in compilation mode `when`, if given)."""
    return feature(
        name = name,
        enabled = enabled,
        flag_sets = [flag_set(
            actions = actions,
            flag_groups = [flag_group(flags = flags)],
            with_features = [with_feature_set(features = [when])] if when else [],
        )],
    )

def _impl(ctx):
    prefix = "/usr/bin/" + ctx.attr.target_triple + "-"
    tool_paths = [
        tool_path(name = tool, path = prefix + tool)
        for tool in ["ar", "cpp", "gcc", "gcov", "ld", "nm", "objcopy", "objdump", "strip"]
    ] + [
        # Not shipped by the cross binutils; Bazel only needs the names to exist.
        tool_path(name = "dwp", path = "/bin/false"),
        tool_path(name = "llvm-cov", path = "/bin/false"),
    ]

    features = [
        # Compilation modes: Bazel enables the feature named after --compilation_mode.
        feature(name = "dbg"),
        feature(name = "opt"),
        feature(name = "fastbuild"),
        _flags_feature("default_compile_flags", _COMPILE_ACTIONS, [
            "-U_FORTIFY_SOURCE",
            "-fstack-protector",
            "-Wall",
            "-fno-omit-frame-pointer",
        ]),
        _flags_feature("dbg_compile_flags", _COMPILE_ACTIONS, ["-g"], when = "dbg"),
        _flags_feature("opt_compile_flags", _COMPILE_ACTIONS, [
            "-g0",
            "-O2",
            "-D_FORTIFY_SOURCE=1",
            "-DNDEBUG",
            "-ffunction-sections",
            "-fdata-sections",
        ], when = "opt"),
        _flags_feature("default_link_flags", _LINK_ACTIONS, [
            "-Wl,-z,relro,-z,now",
            "-pass-exit-codes",
            "-lstdc++",
            "-lm",
        ]),
        _flags_feature("opt_link_flags", _LINK_ACTIONS, ["-Wl,--gc-sections"], when = "opt"),
        # Reproducible outputs: no absolute paths or build times in objects.
        _flags_feature("unfiltered_compile_flags", _COMPILE_ACTIONS, [
            "-fno-canonical-system-headers",
            "-Wno-builtin-macro-redefined",
            "-D__DATE__=\"redacted\"",
            "-D__TIMESTAMP__=\"redacted\"",
            "-D__TIME__=\"redacted\"",
        ]),
        feature(name = "supports_pic", enabled = True),
    ]

    return cc_common.create_cc_toolchain_config_info(
        ctx = ctx,
        features = features,
        cxx_builtin_include_directories = ctx.attr.builtin_include_directories,
        toolchain_identifier = ctx.attr.target_triple,
        host_system_name = "x86_64-linux-gnu",
        target_system_name = ctx.attr.target_triple,
        target_cpu = ctx.attr.cpu,
        target_libc = "glibc",
        compiler = "gcc",
        abi_version = "gcc",
        abi_libc_version = "glibc",
        tool_paths = tool_paths,
    )

cross_gcc_toolchain_config = rule(
    implementation = _impl,
    attrs = {
        "cpu": attr.string(mandatory = True, doc = "Bazel's --cpu value, e.g. aarch64"),
        "target_triple": attr.string(mandatory = True, doc = "GNU triple; tools are /usr/bin/<triple>-*"),
        "builtin_include_directories": attr.string_list(
            mandatory = True,
            doc = "the cross compiler's system include dirs (`<triple>-g++ -E -v -xc++ -`)",
        ),
    },
    provides = [CcToolchainConfigInfo],
)
