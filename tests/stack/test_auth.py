"""AuthService and authentication: registration, tokens, and how every protected call
checks the ``authorization`` header/metadata, over REST through Envoy and over gRPC."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devicehub.testing.stack import unique
from devicehub.v1 import account_pb2, account_pb2_grpc, auth_pb2, auth_pb2_grpc

from api_client import metadata
from stack_settings import SECRET_KEY

ACCOUNT_KEYS = {"id", "username", "phone", "first_name", "last_name", "is_admin", "created_at"}
TOKEN_KEYS = {"access_token", "refresh_token", "token_type", "expires_in"}
INVALID = "Could not validate credentials"
EXPIRED = "Token is expired"
OTHER_SECRET = "another-secret-" + "0" * 32


def mint(account_id: int, *, secret: str = SECRET_KEY, typ: str = "access", age: int = 0) -> str:
    """A token like the server's; ``age`` seconds past its expiry if ``age`` > 0."""
    now = int(time.time())
    exp = now - age if age else now + 600
    claims = {"sub": str(account_id), "adm": False, "typ": typ, "iat": now - 100, "exp": exp}
    return jwt.encode(claims, secret, algorithm="HS256")


def register(stack, **fields):
    body = {"username": unique("u").lower(), "password": "password-123", **fields}
    return stack.request("POST", "/api/v1/auth/register", json=body)


def token_pair(stack, username: str, password: str = "password-123"):
    return stack.request(
        "POST", "/api/v1/auth/token", json={"username": username, "password": password}
    )


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    assert len(status.details) == 1
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_register_returns_the_new_account_without_the_password(stack):
    username = unique("reg").lower()
    response = register(
        stack, username=username, phone="01012345678", first_name="Min", last_name="Kim"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ACCOUNT_KEYS
    assert isinstance(body["id"], int) and body["id"] > 0
    assert (body["username"], body["phone"], body["first_name"], body["last_name"]) == (
        username,
        "01012345678",
        "Min",
        "Kim",
    )
    assert body["is_admin"] is False
    assert body["created_at"].endswith("Z")
    assert "password-123" not in response.text
    me = stack.request("GET", "/api/v1/accounts/me", stack.login(username, "password-123"))
    assert me.json() == body


def test_register_optional_fields_default_to_empty(stack):
    response = register(stack)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["phone"], body["first_name"], body["last_name"]) == ("", "", "")


def test_duplicate_username_conflicts_and_keeps_the_first_account(stack):
    first = register(stack)
    assert first.status_code == 200
    username = first.json()["username"]
    again = register(stack, username=username, password="another-password")
    assert again.status_code == 409
    assert again.json() == {"detail": "Username already exists"}
    assert token_pair(stack, username).status_code == 200
    assert token_pair(stack, username, "another-password").status_code == 401
    me = stack.request("GET", "/api/v1/accounts/me", stack.login(username, "password-123"))
    assert me.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"username": "ab"}, "username must be 3 to 150 characters: letters, digits and @ . + - _"),
        (
            {"username": "has space"},
            "username must be 3 to 150 characters: letters, digits and @ . + - _",
        ),
        (
            {"username": "u" * 151},
            "username must be 3 to 150 characters: letters, digits and @ . + - _",
        ),
        ({"password": "short"}, "password must be 8 to 256 characters"),
        ({"phone": "not-a-phone"}, "phone must be 6 to 20 digits, optionally starting with +"),
        ({"first_name": "x" * 51}, "first_name must be at most 50 characters"),
    ],
    ids=[
        "short-username",
        "space-in-username",
        "long-username",
        "short-password",
        "bad-phone",
        "long-first-name",
    ],
)
def test_invalid_registration_is_400_and_creates_nothing(stack, fields, message):
    username = fields.get("username", unique("bad").lower())
    response = register(stack, **{**fields, "username": username})
    assert response.status_code == 400
    assert response.json() == {"detail": message}
    assert token_pair(stack, username, fields.get("password", "password-123")).status_code == 401


def test_token_returns_a_bearer_pair_for_the_account(stack, user):
    account, _ = user
    response = token_pair(stack, account["username"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_KEYS
    assert body["token_type"] == "bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], SECRET_KEY, algorithms=["HS256"])
    assert (claims["sub"], claims["adm"], claims["typ"]) == (str(account["id"]), False, "access")
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    me = stack.request("GET", "/api/v1/accounts/me", body["access_token"])
    assert me.status_code == 200
    assert me.json() == account


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_bad_credentials_are_401(stack, user, who):
    account, _ = user
    username = account["username"] if who == "wrong password" else unique("ghost").lower()
    response = token_pair(stack, username, "wrong-password")
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect username or password"}


def test_refresh_issues_a_working_pair(stack, user):
    account, _ = user
    first = token_pair(stack, account["username"]).json()
    response = stack.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == TOKEN_KEYS
    assert pair["token_type"] == "bearer"
    me = stack.request("GET", "/api/v1/accounts/me", pair["access_token"])
    assert me.status_code == 200
    assert me.json()["id"] == account["id"]
    again = stack.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert again.status_code == 200


def test_refresh_token_is_not_an_access_token(stack, user):
    account, _ = user
    refresh = token_pair(stack, account["username"]).json()["refresh_token"]
    response = stack.request("GET", "/api/v1/accounts/me", refresh)
    assert response.status_code == 401
    assert response.json() == {"detail": INVALID}


@pytest.mark.parametrize("kind", ["access token", "garbage", "other secret", "expired"])
def test_refresh_rejects_anything_but_a_valid_refresh_token(stack, user, kind):
    account, access = user
    refresh_token = {
        "access token": access,
        "garbage": "garbage",
        "other secret": mint(account["id"], secret=OTHER_SECRET, typ="refresh"),
        "expired": mint(account["id"], typ="refresh", age=10),
    }[kind]
    response = stack.request("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})
    assert response.status_code == 401
    assert response.json() == {"detail": EXPIRED if kind == "expired" else INVALID}


BAD_AUTHORIZATIONS = {
    "missing": lambda account_id: None,
    "scheme only": lambda account_id: "Bearer",
    "basic": lambda account_id: "Basic abc",
    "not a jwt": lambda account_id: "Bearer not-a-jwt",
    "other secret": lambda account_id: "Bearer " + mint(account_id, secret=OTHER_SECRET),
    "refresh typ": lambda account_id: "Bearer " + mint(account_id, typ="refresh"),
    "unsigned": lambda account_id: (
        "Bearer "
        + jwt.encode(
            {"sub": str(account_id), "typ": "access", "exp": int(time.time()) + 600},
            None,
            algorithm="none",
        )
    ),
}


@pytest.mark.parametrize("kind", list(BAD_AUTHORIZATIONS))
def test_bad_authorization_is_401_in_both_body_shapes(stack, user, kind):
    account, _ = user
    value = BAD_AUTHORIZATIONS[kind](account["id"])
    headers = {} if value is None else {"Authorization": value}
    me = stack.request("GET", "/api/v1/accounts/me", headers=headers)
    assert me.status_code == 401
    assert me.json() == {"detail": INVALID}
    types = stack.request("GET", "/api/device/device-types/", headers=headers)
    assert types.status_code == 401
    assert types.json() == {"status": "error", "message": INVALID, "code": "UNAUTHENTICATED"}


def test_expired_token_is_401_token_expired(stack, user):
    account, _ = user
    headers = {"Authorization": "Bearer " + mint(account["id"], age=10)}
    me = stack.request("GET", "/api/v1/accounts/me", headers=headers)
    assert me.status_code == 401
    assert me.json() == {"detail": EXPIRED}
    types = stack.request("GET", "/api/device/device-types/", headers=headers)
    assert types.status_code == 401
    assert types.json() == {"status": "error", "message": EXPIRED, "code": "TOKEN_EXPIRED"}


def test_minted_token_with_the_server_secret_is_accepted(stack, user):
    account, _ = user
    me = stack.request("GET", "/api/v1/accounts/me", mint(account["id"]))
    assert me.status_code == 200
    assert me.json() == account


@pytest.mark.parametrize("scheme", ["Bearer", "Token"])
def test_both_schemes_work_over_rest(stack, user, scheme):
    account, token = user
    response = stack.request(
        "GET", "/api/v1/accounts/me", headers={"Authorization": f"{scheme} {token}"}
    )
    assert response.status_code == 200
    assert response.json() == account


@pytest.mark.parametrize("via_envoy", [False, True], ids=["direct", "via-envoy"])
@pytest.mark.parametrize("scheme", ["Bearer", "Token"])
def test_both_schemes_work_over_grpc(stack, user, scheme, via_envoy):
    account, token = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel(via_envoy=via_envoy))
    me = stub.GetMyAccount(
        account_pb2.GetMyAccountRequest(), metadata=(("authorization", f"{scheme} {token}"),)
    )
    assert (me.id, me.username, me.is_admin) == (account["id"], account["username"], False)


@pytest.mark.parametrize("via_envoy", [False, True], ids=["direct", "via-envoy"])
def test_grpc_without_metadata_is_unauthenticated_with_error_info(stack, via_envoy):
    stub = account_pb2_grpc.AccountServiceStub(stack.channel(via_envoy=via_envoy))
    with pytest.raises(grpc.RpcError) as error:
        stub.GetMyAccount(account_pb2.GetMyAccountRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.value.details() == INVALID
    info = error_info(error.value)
    assert (info.reason, info.domain) == ("UNAUTHENTICATED", "devicehub")


def test_grpc_expired_token_reports_token_expired(stack, user):
    account, _ = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.GetMyAccount(
            account_pb2.GetMyAccountRequest(), metadata=metadata(mint(account["id"], age=10))
        )
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.value.details() == EXPIRED
    info = error_info(error.value)
    assert (info.reason, info.domain) == ("TOKEN_EXPIRED", "devicehub")


def test_auth_flow_over_grpc_needs_no_token(stack):
    auth = auth_pb2_grpc.AuthServiceStub(stack.channel())
    username = unique("g").lower()
    account = auth.Register(auth_pb2.RegisterRequest(username=username, password="password-123"))
    assert account.id > 0 and account.username == username and not account.is_admin
    pair = auth.CreateToken(auth_pb2.CreateTokenRequest(username=username, password="password-123"))
    assert pair.token_type == "bearer" and pair.expires_in > 0
    refreshed = auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=pair.refresh_token))
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    me = stub.GetMyAccount(
        account_pb2.GetMyAccountRequest(), metadata=metadata(refreshed.access_token)
    )
    assert me == account


def test_grpc_auth_errors_carry_reasons(stack, user):
    account, _ = user
    auth = auth_pb2_grpc.AuthServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as taken:
        auth.Register(
            auth_pb2.RegisterRequest(username=account["username"], password="password-123")
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(taken.value).reason == "USERNAME_TAKEN"
    with pytest.raises(grpc.RpcError) as wrong:
        auth.CreateToken(
            auth_pb2.CreateTokenRequest(username=account["username"], password="wrong-password")
        )
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.value.details() == "Incorrect username or password"
    assert error_info(wrong.value).reason == "INVALID_CREDENTIALS"


def test_admin_token_speaks_for_an_admin(stack, admin):
    claims = jwt.decode(admin, SECRET_KEY, algorithms=["HS256"])
    assert claims["adm"] is True
    me = stack.request("GET", "/api/v1/accounts/me", admin)
    assert me.status_code == 200
    assert me.json()["username"] == "admin"
    assert me.json()["is_admin"] is True
