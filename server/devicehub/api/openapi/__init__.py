"""The OpenAPI 3.1 document of the REST edge, built from the descriptor set codegen writes.

Hand-written, small and pure (bytes in, a dict out), because no installable generator
describes what this edge's clients receive: protoc-gen-openapiv2 and its kin print
transcoder shapes (an object where a list is a bare array, a message where a DELETE
answers 204, a Value where the document says null), know nothing of proto3 ``optional``
presence or of the two documented error bodies, and would need a plugin toolchain that
does not install from PyPI. What the descriptors say (paths, parameters, bodies, messages,
comments, field behaviours) comes from them; what only the edge knows (Envoy's Lua filter,
the servicers' REST metadata, the error mapping) is tabled in ``edge.py``.

It must not import ``devicehub.v1`` (or anything that does): codegen runs it right after
protoc, before the stubs are importable (a wheel's stubs are written into its build
directory). ``schemas.py`` turns messages into JSON Schemas, ``document.py`` rules into
operations, ``protos.py`` indexes the descriptor set with its comments.
"""

from devicehub.api.openapi.document import build_document

__all__ = ["build_document"]
