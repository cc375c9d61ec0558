"""Debian system libraries as Bazel targets, found with pkg-config (no downloads).

`system_library(name, modules)` declares three repositories:
  @<name>_k8       the host (x86_64) build: `pkg-config --cflags --libs`
  @<name>_aarch64  the arm64 cross build: `aarch64-linux-gnu-pkg-config --libs --static`
  @<name>          a hub whose target `@<name>` selects one of them by --cpu,
so a BUILD file says `@system_protobuf` whatever the target arch. Only the selected
arch's repository is ever fetched.
"""

def _dedup_keep_last(flags):
    """Abseil's .pc files repeat many -l flags; the linker needs only the last one."""
    seen = {}
    out = []
    for i in range(len(flags) - 1, -1, -1):
        f = flags[i]
        if f.startswith("-l"):
            if f in seen:
                continue
            seen[f] = True
        out.insert(0, f)
    return out

def _pkg_config(ctx, args):
    result = ctx.execute([ctx.attr.pkg_config] + args + ctx.attr.modules)
    if result.return_code != 0:
        fail("%s %s %s failed (is the -dev package installed? `./vexstate deps`):\n%s" % (
            ctx.attr.pkg_config,
            " ".join(args),
            " ".join(ctx.attr.modules),
            result.stderr,
        ))
    return [f for f in result.stdout.strip().split(" ") if f]

def _pkg_config_library_impl(ctx):
    cflags = _pkg_config(ctx, ["--cflags"])
    libs = _pkg_config(ctx, ["--libs"] + (["--static"] if ctx.attr.static else []))
    defines = [f[2:] for f in cflags if f.startswith("-D")]
    copts = [f for f in cflags if not f.startswith("-D")]
    linkopts = _dedup_keep_last(libs) + ctx.attr.extra_linkopts
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", """package(default_visibility = ["//visibility:public"])

cc_library(
    name = "lib",
    defines = {defines},
    copts = {copts},
    linkopts = {linkopts},
)
""".format(defines = repr(defines), copts = repr(copts), linkopts = repr(linkopts)))

pkg_config_library = repository_rule(
    implementation = _pkg_config_library_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        "pkg_config": attr.string(default = "pkg-config"),
        "static": attr.bool(default = False),
        "extra_linkopts": attr.string_list(),
    },
    # configure (not local): re-run only on `bazel sync --configure`, so a no-op build stays fast.
    configure = True,
)

def _hub_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD", """package(default_visibility = ["//visibility:public"])

config_setting(
    name = "aarch64",
    values = {{"cpu": "aarch64"}},
)

alias(
    name = "{name}",
    actual = select({{
        ":aarch64": "@{name}_aarch64//:lib",
        "//conditions:default": "@{name}_k8//:lib",
    }}),
)
""".format(name = ctx.name))

_hub = repository_rule(implementation = _hub_impl, attrs = {})

def system_library(name, modules, extra_linkopts = []):
    pkg_config_library(
        name = name + "_k8",
        modules = modules,
        extra_linkopts = extra_linkopts,
    )
    pkg_config_library(
        name = name + "_aarch64",
        modules = modules,
        pkg_config = "aarch64-linux-gnu-pkg-config",
        static = True,
        extra_linkopts = extra_linkopts,
    )
    _hub(name = name)
