"""A protoc plugin that runs grpcio-tools' built-in gRPC Python generator.

grpcio-tools compiles the gRPC Python generator into its own `protoc` and ships no
`protoc-gen-grpc_python` binary, so buf cannot call it as a plugin. This bridge receives
buf's CodeGeneratorRequest, hands the same descriptors to grpcio-tools' protoc with
`--grpc_python_out`, and returns the files it wrote. The output is byte-for-byte what
`python -m grpc_tools.protoc --grpc_python_out` produces, so the version pinned in uv.lock
decides the generated code.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as scratch:
        descriptors = Path(scratch, "descriptors.binpb")
        descriptors.write_bytes(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = Path(scratch, "out")
        out.mkdir()
        args = ["protoc", f"--descriptor_set_in={descriptors}", f"--grpc_python_out={out}"]
        if request.parameter:
            args.append(f"--grpc_python_opt={request.parameter}")
        status = protoc.main([*args, *request.file_to_generate])
        if status != 0:
            response.error = f"grpc_tools.protoc exited with {status}"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
