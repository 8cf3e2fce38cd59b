"""KakaoTalk Alimtalk through NHN Cloud Bizmessage (API v2.3): the provider adapter.

``POST {base}/alimtalk/v2.3/appkeys/{appkey}/messages`` with ``X-Secret-Key``; success
needs ``header.isSuccessful`` and ``resultCode == 0`` for every recipient. Every send of a
process goes through one shared HTTP client (``http_client.py``), closed on shutdown.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx

from devicehub import metrics
from devicehub.integrations.http_client import SharedHttpClient


@dataclass(frozen=True)
class AlimtalkConfig:
    base_url: str
    app_key: str
    secret_key: str
    sender_key: str
    template_code: str
    timeout: float = 5.0

    @property
    def complete(self) -> bool:
        return all(
            (self.base_url, self.app_key, self.secret_key, self.sender_key, self.template_code)
        )


@dataclass(frozen=True)
class SendResult:
    """What the provider said: ``ok`` only if it accepted the message for the recipient."""

    ok: bool
    request_id: str
    response: str


class AlimtalkClient:
    """Sends template messages; never raises for provider or network failures."""

    def __init__(self, config: AlimtalkConfig) -> None:
        self.config = config
        self._http = SharedHttpClient(config.timeout)

    async def close(self) -> None:
        await self._http.close()

    async def send(self, recipient: str, parameters: dict[str, str]) -> SendResult:
        try:
            result = await self._send(recipient, parameters)
        except httpx.HTTPError as error:
            metrics.provider_call("alimtalk", "unreachable")
            return SendResult(False, "", f"provider unreachable: {error!r}")
        # Rejected: the provider answered, but not that it accepted the message.
        metrics.provider_call("alimtalk", "sent" if result.ok else "rejected")
        return result

    async def _send(self, recipient: str, parameters: dict[str, str]) -> SendResult:
        config = self.config
        url = f"{config.base_url.rstrip('/')}/alimtalk/v2.3/appkeys/{config.app_key}/messages"
        body = {
            "senderKey": config.sender_key,
            "templateCode": config.template_code,
            "recipientList": [{"recipientNo": recipient, "templateParameter": parameters}],
        }
        headers = {
            "X-Secret-Key": config.secret_key,
            "X-NC-API-IDEMPOTENCY-KEY": str(uuid.uuid4()),
        }
        response = await self._http.client().post(url, json=body, headers=headers)
        text = response.text[:4000]
        try:
            payload = response.json()
            header = payload.get("header") or {}
            message = payload.get("message") or {}
            results = message.get("sendResults") or []
            ok = (
                response.is_success
                and header.get("isSuccessful") is True
                and bool(results)
                and all(result.get("resultCode") == 0 for result in results)
            )
            return SendResult(ok, str(message.get("requestId") or ""), text)
        except (ValueError, AttributeError):
            return SendResult(False, "", f"HTTP {response.status_code}: {json.dumps(text)}")
