"""cc_grpc_proto_library: runs the system protoc (+ grpc_cpp_plugin) and wraps the output.

Bazel's native proto rules want @com_google_protobuf, a download; this rule only needs the
Debian compilers. Protos are imported relative to `proto_root` (e.g. "vexstate/v1/x.proto"),
and the generated headers are included the same way ("vexstate/v1/x.pb.h").
"""

ProtoSources = provider(fields = ["transitive"])

def _proto_gen_impl(ctx):
    transitive = depset(ctx.files.srcs, transitive = [d[ProtoSources].transitive for d in ctx.attr.deps])
    root = ctx.attr.proto_root
    out_root = ctx.bin_dir.path + "/" + root
    outputs = []
    headers = []
    for src in ctx.files.srcs:
        if not src.short_path.startswith(root + "/"):
            fail("%s is not under proto_root %s" % (src.short_path, root))
        suffixes = [".pb.h", ".pb.cc"] + ([".grpc.pb.h", ".grpc.pb.cc"] if ctx.attr.grpc else [])
        for s in suffixes:
            out = ctx.actions.declare_file(src.basename[:-len(".proto")] + s)
            outputs.append(out)
            if s.endswith(".h"):
                headers.append(out)
    args = ["-I" + root, "-I/usr/include", "--cpp_out=" + out_root]
    tools = [ctx.executable._protoc]
    if ctx.attr.grpc:
        args += [
            "--plugin=protoc-gen-grpc=" + ctx.executable._grpc_plugin.path,
            "--grpc_out=" + out_root,
        ]
        tools.append(ctx.executable._grpc_plugin)
    args += [s.path for s in ctx.files.srcs]
    ctx.actions.run(
        executable = ctx.executable._protoc,
        arguments = args,
        inputs = transitive,
        tools = tools,
        outputs = outputs,
        mnemonic = "ProtoCompile",
        progress_message = "protoc %s" % ctx.label,
    )
    return [
        DefaultInfo(files = depset(outputs)),
        OutputGroupInfo(
            headers = depset(headers),
            sources = depset([o for o in outputs if o not in headers]),
        ),
        ProtoSources(transitive = transitive),
    ]

_proto_gen = rule(
    implementation = _proto_gen_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".proto"]),
        "deps": attr.label_list(providers = [ProtoSources]),
        "proto_root": attr.string(default = "proto"),
        "grpc": attr.bool(default = False),
        "_protoc": attr.label(default = "@host_tools//:protoc", executable = True, cfg = "exec"),
        "_grpc_plugin": attr.label(default = "@host_tools//:grpc_cpp_plugin", executable = True, cfg = "exec"),
    },
)

def cc_grpc_proto_library(name, srcs, deps = [], grpc = False, proto_root = "proto", visibility = None):
    """Declares `<name>` (cc_library) and `<name>_gen` (the protoc outputs).

    deps: other cc_grpc_proto_library names whose .proto files these import.
    """
    _proto_gen(
        name = name + "_gen",
        srcs = srcs,
        deps = [d + "_gen" for d in deps],
        grpc = grpc,
        proto_root = proto_root,
    )
    for group in ["headers", "sources"]:
        native.filegroup(name = "%s_%s" % (name, group), srcs = [name + "_gen"], output_group = group)
    native.cc_library(
        name = name,
        srcs = [name + "_sources"],
        hdrs = [name + "_headers"],
        strip_include_prefix = "/" + proto_root,
        deps = deps + ["@system_protobuf"] + (["@system_grpc"] if grpc else []),
        visibility = visibility,
    )
