"""Builds everything derived from proto/: Python stubs and Envoy's descriptor set.

Run as ``python -m devicehub.runtime.codegen`` (the bootstrap script does). Outputs:

- ``server/devicehub/v1/*_pb2.py`` and ``*_pb2_grpc.py``: the ``devicehub.v1`` package's
  messages and service stubs, importable as ``devicehub.v1``;
- ``build/devicehub.pb``: a self-contained descriptor set (with imports) that Envoy's
  gRPC-JSON transcoder loads;
- ``build/third_party``: the google/api and google/rpc protos from the
  googleapis-common-protos package, so ``buf lint`` resolves imports offline.

Nothing here is imported by the server itself, so it runs before any stub exists.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import google.api
import grpc_tools
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto"
PYTHON_OUT = REPO_ROOT / "server"
BUILD_DIR = REPO_ROOT / "build"
DESCRIPTOR_SET = BUILD_DIR / "devicehub.pb"
THIRD_PARTY = BUILD_DIR / "third_party"


def _googleapis_root() -> Path:
    """Directory holding google/api/*.proto from googleapis-common-protos."""
    return Path(next(iter(google.api.__path__))).parent.parent


def _protobuf_include() -> Path:
    """Directory holding google/protobuf/*.proto shipped with grpcio-tools."""
    return Path(next(iter(grpc_tools.__path__))) / "_proto"


def _copy_third_party() -> None:
    googleapis = _googleapis_root()
    if THIRD_PARTY.exists():
        shutil.rmtree(THIRD_PARTY)
    for package in ("google/api", "google/rpc"):
        target = THIRD_PARTY / package
        target.mkdir(parents=True)
        for proto in (googleapis / package).glob("*.proto"):
            shutil.copy2(proto, target / proto.name)


def build() -> None:
    """Regenerates all proto-derived files; raises RuntimeError if protoc fails."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    BUILD_DIR.mkdir(exist_ok=True)
    generated = PYTHON_OUT / "devicehub" / "v1"
    if generated.exists():
        shutil.rmtree(generated)
    generated.mkdir(parents=True)
    (generated / "__init__.py").write_text(
        '"""Generated from proto/devicehub/v1. Do not edit."""\n'
    )
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{_googleapis_root()}",
        f"-I{_protobuf_include()}",
        f"--python_out={PYTHON_OUT}",
        f"--pyi_out={PYTHON_OUT}",
        f"--grpc_python_out={PYTHON_OUT}",
        f"--descriptor_set_out={DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        *protos,
        # Details of error statuses print in full when their types are known.
        "google/rpc/error_details.proto",
        "google/rpc/status.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    # google/rpc outputs are provided by googleapis-common-protos; drop our copies.
    shutil.rmtree(PYTHON_OUT / "google", ignore_errors=True)
    _copy_third_party()


if __name__ == "__main__":
    try:
        build()
    except RuntimeError as exc:
        sys.exit(str(exc))
