"""A fake NHN Cloud Bizmessage (Alimtalk v2.3) provider on loopback.

Speaks the documented request and response format. Behaviour per recipient number:
``FAIL_RECIPIENT`` gets a documented failure (``isSuccessful`` false); every other
recipient is accepted. ``stop()`` closes the port (provider down) and ``start()``
reopens it on the same port.

``keep_alive`` and the connection counters: ``fake_provider.FakeProvider``.
"""

from __future__ import annotations

import json
import re
import uuid

from fake_provider import FakeProvider

APP_KEY = "test-app-key"
SECRET_KEY = "test-secret-key"
SENDER_KEY = "test-sender-key"
TEMPLATE_CODE = "IMPEDANCE_ERROR"
FAIL_RECIPIENT = "01099999999"
_PATH = re.compile(r"^/alimtalk/v2\.3/appkeys/([^/]+)/messages$")


class FakeAlimtalk(FakeProvider):
    def __init__(self, keep_alive: bool = False) -> None:
        super().__init__(keep_alive)
        self.requests: list[dict] = []

    def sent_to(self, recipient: str) -> list[dict]:
        """Accepted requests for ``recipient``."""
        return [
            r
            for r in self.requests
            if r["body"]["recipientList"][0]["recipientNo"] == recipient and r["accepted"]
        ]

    def start(self) -> None:
        fake = self

        class Handler(self.handler_base()):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                match = _PATH.match(self.path)
                authorized = (
                    match is not None
                    and match.group(1) == APP_KEY
                    and self.headers.get("X-Secret-Key") == SECRET_KEY
                )
                recipient = body["recipientList"][0]["recipientNo"]
                accepted = (
                    authorized
                    and body.get("senderKey") == SENDER_KEY
                    and body.get("templateCode") == TEMPLATE_CODE
                    and recipient != FAIL_RECIPIENT
                )
                fake.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                        "accepted": accepted,
                    }
                )
                request_id = uuid.uuid4().hex
                code, message = (0, "SUCCESS") if accepted else (-1000, "Invalid recipient")
                payload = {
                    "header": {
                        "resultCode": code,
                        "resultMessage": message,
                        "isSuccessful": accepted,
                    },
                    "message": {
                        "requestId": request_id,
                        "sendResults": [
                            {"recipientNo": recipient, "resultCode": code, "resultMessage": message}
                        ],
                    },
                }
                raw = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json;charset=UTF-8")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.serve(Handler)
