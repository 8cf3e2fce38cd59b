"""AuthService: registration and tokens."""

from __future__ import annotations

from devicehub import accounts
from devicehub.db import run_db
from devicehub.models import Account
from devicehub.security import Caller, TokenSigner
from devicehub.services import messages
from devicehub.v1 import account_pb2, auth_pb2, auth_pb2_grpc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def _token_pair(self, account: Account) -> auth_pb2.Token:
        caller = Caller(account_id=account.id, is_admin=account.is_admin)
        return auth_pb2.Token(
            access_token=self._signer.issue_access(caller),
            refresh_token=self._signer.issue_refresh(caller),
            token_type="bearer",
            expires_in=self._signer.access_ttl,
        )

    async def Register(self, request: auth_pb2.RegisterRequest, context) -> account_pb2.Account:
        row = await run_db(
            accounts.register,
            request.username,
            request.password,
            request.phone,
            request.first_name,
            request.last_name,
        )
        return messages.account(row)

    async def CreateToken(self, request: auth_pb2.CreateTokenRequest, context) -> auth_pb2.Token:
        account = await run_db(accounts.authenticate, request.username, request.password)
        return self._token_pair(account)

    async def RefreshToken(self, request: auth_pb2.RefreshTokenRequest, context) -> auth_pb2.Token:
        caller = self._signer.verify(request.refresh_token, kind="refresh")
        # Re-read the account: a deleted account gets no new tokens, and a changed admin
        # flag takes effect at the next refresh.
        account = await run_db(accounts.get_account_for_token, caller.account_id)
        return self._token_pair(account)
