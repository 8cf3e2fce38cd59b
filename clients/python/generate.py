"""Generates the client's stubs, ``devicehub_client.v1``, from the repository's ``proto/``.

Run as ``python clients/python/generate.py`` in a checkout (``scripts/bootstrap.sh`` does) to
write ``src/devicehub_client/v1`` for the editable install; the wheel build (``setup.py``)
calls ``generate`` to write the same package into the wheel's build directory.

protoc writes the stubs of ``devicehub/v1/x.proto`` as the Python package ``devicehub.v1``,
which is the server's. The client must not take that name: a process that imports both (the
tests, a tool built on the server) would get whichever came first on ``sys.path``. So the
Python imports are rewritten to ``devicehub_client.v1``, and nothing else: the proto file
names (``devicehub/v1/x.proto``) and the proto package (``devicehub.v1``, in every gRPC method
path) stay as the server's. protobuf's default descriptor pool accepts a file it already
holds when the serialized descriptor is byte for byte the same, so both sets of stubs load in
one process as long as they come from the same protos.

google/api and google/protobuf are imported from googleapis-common-protos and protobuf at
run time; at build time their .proto files come from googleapis-common-protos and
grpcio-tools (the build requirements), like the server's codegen does.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

CLIENT_ROOT = Path(__file__).resolve().parent
# In a checkout the client sits at clients/python, two levels below the protos.
CHECKOUT_PROTO_ROOT = CLIENT_ROOT.parent.parent / "proto"
GENERATED_PACKAGE = "devicehub_client.v1"
_PROTOC_PACKAGE = "devicehub.v1"

# Only import statements and the module name given to protobuf's builder are rewritten.
# The serialized descriptors (bytes literals) and the gRPC method paths keep "devicehub.v1".
_IMPORT_LINE = re.compile(r"^(from|import) devicehub\.v1\b")
_BUILDER_MODULE = "'devicehub.v1."


def _googleapis_root() -> Path:
    """Directory holding google/api/*.proto from googleapis-common-protos."""
    import google.api

    return Path(next(iter(google.api.__path__))).parent.parent


def _protobuf_include() -> Path:
    """Directory holding google/protobuf/*.proto shipped with grpcio-tools."""
    import grpc_tools

    return Path(next(iter(grpc_tools.__path__))) / "_proto"


def _rewrite(source: str) -> str:
    lines = []
    for line in source.splitlines(keepends=True):
        if _IMPORT_LINE.match(line):
            line = line.replace(_PROTOC_PACKAGE, GENERATED_PACKAGE, 1)
        elif line.startswith("_builder.BuildTopDescriptorsAndMessages("):
            line = line.replace(_BUILDER_MODULE, f"'{GENERATED_PACKAGE}.", 1)
        lines.append(line)
    return "".join(lines)


def generate(proto_root: Path, package_root: Path) -> Path:
    """(Re)writes ``package_root/devicehub_client/v1`` with the stubs of every proto under
    ``proto_root/devicehub/v1``; returns that directory. Raises RuntimeError if protoc
    fails or its output imports the server's package after the rewrite."""
    from grpc_tools import protoc

    protos = sorted(
        str(p.relative_to(proto_root)) for p in (proto_root / "devicehub" / "v1").glob("*.proto")
    )
    if not protos:
        raise RuntimeError(f"no protos in {proto_root / 'devicehub' / 'v1'}")
    target = package_root / "devicehub_client" / "v1"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{_googleapis_root()}",
            f"-I{_protobuf_include()}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed; see the messages above")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        (target / "__init__.py").write_text(
            '"""Generated from proto/devicehub/v1 by clients/python/generate.py. Do not edit."""\n'
        )
        for generated in sorted((out / "devicehub" / "v1").iterdir()):
            rewritten = _rewrite(generated.read_text())
            if any(_IMPORT_LINE.match(line) for line in rewritten.splitlines()):
                raise RuntimeError(f"{generated.name} still imports {_PROTOC_PACKAGE}")
            (target / generated.name).write_text(rewritten)
    return target


if __name__ == "__main__":
    try:
        written = generate(CHECKOUT_PROTO_ROOT, CLIENT_ROOT / "src")
    except RuntimeError as exc:
        sys.exit(str(exc))
    print(f"generated {written.relative_to(CLIENT_ROOT.parent.parent)}")
