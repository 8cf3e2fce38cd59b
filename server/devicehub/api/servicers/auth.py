"""AuthService: registration and tokens."""

from __future__ import annotations

from devicehub import accounts, logins
from devicehub.api import converters
from devicehub.api.interceptors import client_address
from devicehub.logins import LoginPolicy, SignupPolicy
from devicehub.security import Caller, TokenSigner, hash_password_bounded
from devicehub.storage.db import run_db
from devicehub.storage.models import Account
from devicehub.v1 import account_pb2, auth_pb2, auth_pb2_grpc


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        signer: TokenSigner,
        login_policy: LoginPolicy | None = None,
        signup_policy: SignupPolicy | None = None,
    ) -> None:
        self._signer = signer
        self._login_policy = login_policy or LoginPolicy()
        self._signup_policy = signup_policy or SignupPolicy()

    def _token_pair(self, account: Account) -> auth_pb2.Token:
        caller = Caller(
            account_id=account.id, is_admin=account.is_admin, token_version=account.token_version
        )
        return auth_pb2.Token(
            access_token=self._signer.issue_access(caller),
            refresh_token=self._signer.issue_refresh(caller),
            token_type="bearer",
            expires_in=self._signer.access_ttl,
        )

    async def Register(self, request: auth_pb2.RegisterRequest, context) -> account_pb2.Account:
        # Hashed on the bounded hashing executor, not on a database thread; a password of
        # the wrong length is refused by accounts.register before any hashing.
        await run_db(logins.count_registration, self._signup_policy, client_address(context))
        password = request.password
        hashable = accounts.MIN_PASSWORD_LENGTH <= len(password) <= accounts.MAX_PASSWORD_LENGTH
        row = await run_db(
            accounts.register,
            request.username,
            password,
            request.phone,
            request.first_name,
            request.last_name,
            password_hash=await hash_password_bounded(password) if hashable else None,
        )
        return converters.account(row)

    async def CreateToken(self, request: auth_pb2.CreateTokenRequest, context) -> auth_pb2.Token:
        account = await logins.authenticate(
            self._login_policy, request.username, request.password, client_address(context)
        )
        return self._token_pair(account)

    async def RefreshToken(self, request: auth_pb2.RefreshTokenRequest, context) -> auth_pb2.Token:
        caller = self._signer.verify(request.refresh_token, kind="refresh")
        # Re-read the account: a deleted account, and a refresh token issued before the
        # account's tokens were revoked, get no new tokens.
        account = await run_db(accounts.get_account_for_token, caller)
        return self._token_pair(account)
