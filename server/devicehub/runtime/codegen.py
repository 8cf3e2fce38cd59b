"""Builds everything derived from proto/: Python stubs and Envoy's descriptor set.

Run as ``python -m devicehub.runtime.codegen`` in a checkout (the bootstrap script does).
Outputs:

- ``server/devicehub/v1/*_pb2.py`` and ``*_pb2_grpc.py``: the ``devicehub.v1`` package's
  messages and service stubs, importable as ``devicehub.v1``;
- ``server/devicehub/v1/devicehub.pb``: a self-contained descriptor set (with imports) that
  Envoy's gRPC-JSON transcoder loads; it sits beside the stubs so that a wheel ships it as
  package data with them (``devicehub.resources``);
- ``server/devicehub/v1/openapi.json``: the OpenAPI document of the REST edge, built from
  that descriptor set (``devicehub.api.openapi``). Like everything here it is generated
  whenever the code is (in a checkout by ``scripts/bootstrap.sh``, in every wheel by
  ``setup.py``) and never committed, so it cannot fall behind the protos;
- ``build/third_party``: the google/api and google/rpc protos from the
  googleapis-common-protos package, so ``buf`` resolves imports offline.

The wheel build (``setup.py``) calls ``generate`` to write the same ``devicehub/v1`` into the
wheel. Nothing here is imported by the server itself, so it runs before any stub exists (the
document's builder imports no stub either).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import google.api
import grpc_tools
from grpc_tools import protoc

from devicehub import resources
from devicehub.api.openapi import build_document

PROTO_ROOT = resources.CHECKOUT_ROOT / "proto"
THIRD_PARTY = resources.CHECKOUT_ROOT / "build" / "third_party"
DESCRIPTOR_SET_NAME = resources.DESCRIPTOR_SET.name
OPENAPI_DOCUMENT_NAME = resources.OPENAPI_DOCUMENT.name


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


def openapi_json(descriptor_set: bytes) -> str:
    """The OpenAPI document of ``descriptor_set`` as written to ``openapi.json``: the same
    bytes for the same protos (the builder's order is the descriptors')."""
    return json.dumps(build_document(descriptor_set), ensure_ascii=False, indent=2) + "\n"


def generate(proto_root: Path, python_out: Path) -> None:
    """(Re)writes ``python_out/devicehub/v1``: the stubs of every proto under ``proto_root``,
    the descriptor set and the OpenAPI document; raises RuntimeError if protoc fails."""
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    generated = python_out / "devicehub" / "v1"
    if generated.exists():
        shutil.rmtree(generated)
    generated.mkdir(parents=True)
    (generated / "__init__.py").write_text(
        '"""Generated from proto/devicehub/v1. Do not edit."""\n'
    )
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{_googleapis_root()}",
        f"-I{_protobuf_include()}",
        f"--python_out={python_out}",
        f"--pyi_out={python_out}",
        f"--grpc_python_out={python_out}",
        f"--descriptor_set_out={generated / DESCRIPTOR_SET_NAME}",
        "--include_imports",
        "--include_source_info",
        *protos,
        # Details of error statuses print in full when their types are known.
        "google/rpc/error_details.proto",
        "google/rpc/status.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    descriptor_set = (generated / DESCRIPTOR_SET_NAME).read_bytes()
    (generated / OPENAPI_DOCUMENT_NAME).write_text(openapi_json(descriptor_set), encoding="utf-8")
    # google/rpc outputs are provided by googleapis-common-protos; drop our copies.
    shutil.rmtree(python_out / "google", ignore_errors=True)


def build() -> None:
    """Regenerates all proto-derived files of the checkout this package was imported from."""
    if not PROTO_ROOT.is_dir():
        raise RuntimeError(f"no {PROTO_ROOT}: code generation runs in a devicehub checkout")
    generate(PROTO_ROOT, resources.PACKAGE_DIR.parent)
    _copy_third_party()


if __name__ == "__main__":
    try:
        build()
    except RuntimeError as exc:
        sys.exit(str(exc))
