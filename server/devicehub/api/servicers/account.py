"""AccountService: the caller's account (deletion, password, admin rights) and child accounts."""

from __future__ import annotations

from google.protobuf import empty_pb2

from devicehub import accounts, revocations
from devicehub.api import converters
from devicehub.api.interceptors import current_caller
from devicehub.api.rest_edge import send_list_metadata
from devicehub.storage.db import run_db
from devicehub.v1 import account_pb2, account_pb2_grpc


def _optional(request, field: str) -> str | None:
    return getattr(request, field) if request.HasField(field) else None


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, token_versions: revocations.TokenVersions) -> None:
        # Told of each revocation made here once it committed: this process stops
        # accepting the account's old tokens before the call answers.
        self._token_versions = token_versions

    async def GetMyAccount(self, request, context) -> account_pb2.Account:
        row = await run_db(accounts.get_account, current_caller().account_id)
        return converters.account(row)

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
        return converters.child(row)

    async def ListChildren(self, request: account_pb2.ListChildrenRequest, context):
        page = await run_db(
            accounts.list_children, current_caller(), request.page_size, request.page_token
        )
        await send_list_metadata(context, "children", page.next_page_token)
        return account_pb2.ListChildrenResponse(
            children=[converters.child(row) for row in page.items],
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
        return converters.child(row)

    async def DeleteChild(self, request: account_pb2.DeleteChildRequest, context):
        await run_db(accounts.delete_child, current_caller(), request.id)
        return empty_pb2.Empty()

    async def DeleteMyAccount(self, request: account_pb2.DeleteMyAccountRequest, context):
        revocation = await run_db(
            accounts.delete_account, current_caller(), self._token_versions.retention
        )
        self._token_versions.revoked(revocation)
        return empty_pb2.Empty()

    async def ChangeMyPassword(self, request: account_pb2.ChangeMyPasswordRequest, context):
        revocation = await accounts.change_password(
            current_caller(),
            request.current_password,
            request.new_password,
            self._token_versions.retention,
        )
        self._token_versions.revoked(revocation)
        return empty_pb2.Empty()

    async def SetAccountAdmin(self, request: account_pb2.SetAccountAdminRequest, context):
        row, revocation = await run_db(
            accounts.set_admin,
            current_caller(),
            request.id,
            request.is_admin,
            self._token_versions.retention,
        )
        if revocation is not None:
            self._token_versions.revoked(revocation)
        return converters.account(row)
