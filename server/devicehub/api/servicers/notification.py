"""NotificationService: the impedance-error Alimtalk."""

from __future__ import annotations

import datetime as dt

from devicehub import notifications
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import ALIMTALK_OUTCOME_HEADER, send_rest_body
from devicehub.integrations.alimtalk import AlimtalkClient
from devicehub.v1 import notification_pb2 as pb
from devicehub.v1 import notification_pb2_grpc

_OUTCOMES = {
    notifications.SENT: pb.SendImpedanceAlertResponse.OUTCOME_SENT,
    notifications.SUPPRESSED: pb.SendImpedanceAlertResponse.OUTCOME_SUPPRESSED,
}


class NotificationServicer(notification_pb2_grpc.NotificationServiceServicer):
    def __init__(self, client: AlimtalkClient, suppress_window: dt.timedelta) -> None:
        self._client = client
        self._window = suppress_window

    async def SendImpedanceAlert(self, request, context):
        result = await notifications.send_impedance_alert(
            current_caller(), self._client, self._window
        )
        # REST clients get the documented `null` body; the header tells them more.
        await send_rest_body(context, "null", (ALIMTALK_OUTCOME_HEADER, result.outcome))
        return pb.SendImpedanceAlertResponse(
            outcome=_OUTCOMES[result.outcome],
            provider_request_id=result.provider_request_id,
        )
