"""AccountService: the caller's account and child accounts."""

from __future__ import annotations

from google.protobuf import empty_pb2

from devicehub import accounts
from devicehub.db import run_db
from devicehub.interceptors import current_caller
from devicehub.services import messages
from devicehub.services.rest_edge import send_list_metadata
from devicehub.v1 import account_pb2, account_pb2_grpc


def _optional(request, field: str) -> str | None:
    return getattr(request, field) if request.HasField(field) else None


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    async def GetMyAccount(self, request, context) -> account_pb2.Account:
        row = await run_db(accounts.get_account, current_caller().account_id)
        return messages.account(row)

    async def CreateChild(self, request: account_pb2.CreateChildRequest, context):
        child = request.child
        row = await run_db(
            accounts.create_child,
            current_caller(),
            child.first_name,
            child.last_name,
            child.birthdate,
            child.gender,
        )
        return messages.child(row)

    async def ListChildren(self, request: account_pb2.ListChildrenRequest, context):
        page = await run_db(
            accounts.list_children, current_caller(), request.page_size, request.page_token
        )
        await send_list_metadata(context, "children", page.next_page_token)
        return account_pb2.ListChildrenResponse(
            children=[messages.child(row) for row in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateChild(self, request: account_pb2.UpdateChildRequest, context):
        row = await run_db(
            accounts.update_child,
            current_caller(),
            request.id,
            first_name=_optional(request, "first_name"),
            last_name=_optional(request, "last_name"),
            birthdate=_optional(request, "birthdate"),
            gender=_optional(request, "gender"),
        )
        return messages.child(row)

    async def DeleteChild(self, request: account_pb2.DeleteChildRequest, context):
        await run_db(accounts.delete_child, current_caller(), request.id)
        return empty_pb2.Empty()
