"""Exposes the system `protoc` and `grpc_cpp_plugin` (Debian packages) as Bazel labels."""

_TOOLS = ["protoc", "grpc_cpp_plugin"]

def _host_tools_impl(ctx):
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    build = ['package(default_visibility = ["//visibility:public"])\n']
    for tool in _TOOLS:
        path = ctx.which(tool)
        if path == None:
            fail("%s not found on PATH: install protobuf-compiler and protobuf-compiler-grpc (`./vexstate deps`)" % tool)
        ctx.symlink(path, tool + ".bin")
        build.append('sh_binary(name = "%s", srcs = ["%s.bin"])\n' % (tool, tool))
    ctx.file("BUILD", "\n".join(build))

host_tools = repository_rule(implementation = _host_tools_impl, configure = True)
