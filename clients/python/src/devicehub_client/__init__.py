"""Python client of devicehub's gRPC API.

``Client`` connects and holds a typed stub per service (``client.devices``, ...), signs in
and refreshes, pages through lists, follows live messages and uploads firmware; every
failure is an ``ApiError`` carrying the service's ``ErrorReason``. The messages are those of
``proto/devicehub/v1``, generated as ``devicehub_client.v1.<name>_pb2``.
"""

from devicehub_client.client import Client, Tokens
from devicehub_client.errors import ApiError
from devicehub_client.retry import IDEMPOTENT_METHODS, RetryPolicy

__all__ = ["IDEMPOTENT_METHODS", "ApiError", "Client", "RetryPolicy", "Tokens"]
