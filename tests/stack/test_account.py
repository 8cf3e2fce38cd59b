"""AccountService: the caller's own account and child accounts, over REST through Envoy
and over gRPC."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devicehub.v1 import account_pb2, account_pb2_grpc

from api_client import list_all, metadata, query_database

ACCOUNT_KEYS = {"id", "username", "phone", "first_name", "last_name", "is_admin", "created_at"}
CHILD_KEYS = {"id", "root_user_id", "first_name", "last_name", "birthdate", "gender", "created_at"}
CHILDREN = "/api/v1/accounts/children"
DATE_MESSAGE = "birthdate must be a date written YYYY-MM-DD"


def child_body(**overrides) -> dict:
    return {
        "first_name": "Yuna",
        "last_name": "Kim",
        "birthdate": "2015-03-01",
        "gender": "female",
        **overrides,
    }


def create_child(stack, token: str, **overrides) -> dict:
    response = stack.request("POST", CHILDREN, token, json=child_body(**overrides))
    assert response.status_code == 200, response.text
    return response.json()


def test_me_returns_the_callers_account(stack, user):
    account, token = user
    response = stack.request("GET", "/api/v1/accounts/me", token)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ACCOUNT_KEYS
    assert body == account
    assert body["is_admin"] is False
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    me = stub.GetMyAccount(account_pb2.GetMyAccountRequest(), metadata=metadata(token))
    assert (me.id, me.username, me.phone) == (account["id"], account["username"], account["phone"])


def test_child_lifecycle_over_rest(stack, user):
    account, token = user
    created = stack.request("POST", CHILDREN, token, json=child_body())
    assert created.status_code == 200
    child = created.json()
    assert set(child) == CHILD_KEYS
    assert isinstance(child["id"], int) and child["id"] > 0
    assert child["root_user_id"] == account["id"]
    assert (child["first_name"], child["last_name"], child["birthdate"], child["gender"]) == (
        "Yuna",
        "Kim",
        "2015-03-01",
        "female",
    )
    assert child["created_at"].endswith("Z")
    assert list_all(stack, CHILDREN, token) == [child]

    patched = stack.request("PATCH", f"{CHILDREN}/{child['id']}", token, json={"gender": "male"})
    assert patched.status_code == 200
    assert patched.json() == {**child, "gender": "male"}
    assert list_all(stack, CHILDREN, token) == [{**child, "gender": "male"}]

    deleted = stack.request("DELETE", f"{CHILDREN}/{child['id']}", token)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert list_all(stack, CHILDREN, token) == []


def test_trailing_slash_variants(stack, user):
    _, token = user
    created = stack.request("POST", CHILDREN + "/", token, json=child_body())
    assert created.status_code == 200, created.text
    child = created.json()
    assert list_all(stack, CHILDREN + "/", token) == [child]
    patched = stack.request("PATCH", f"{CHILDREN}/{child['id']}/", token, json={"last_name": "Lee"})
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**child, "last_name": "Lee"}
    deleted = stack.request("DELETE", f"{CHILDREN}/{child['id']}/", token)
    assert deleted.status_code == 204
    assert list_all(stack, CHILDREN, token) == []


def test_children_are_listed_in_id_order_and_only_the_callers(stack, user):
    _, token = user
    _, other_token = stack.new_user()
    theirs = create_child(stack, other_token, first_name="Other")
    mine = [create_child(stack, token, first_name=name) for name in ("A", "B", "C")]
    listed = list_all(stack, CHILDREN, token)
    assert isinstance(listed, list)
    assert listed == mine
    assert [c["id"] for c in listed] == sorted(c["id"] for c in listed)
    assert list_all(stack, CHILDREN, other_token) == [theirs]


def test_another_users_child_is_not_found(stack, user):
    _, token = user
    _, owner_token = stack.new_user()
    child = create_child(stack, owner_token)
    patched = stack.request("PATCH", f"{CHILDREN}/{child['id']}", token, json={"gender": "male"})
    assert patched.status_code == 404
    assert patched.json() == {"detail": "Child account not found"}
    deleted = stack.request("DELETE", f"{CHILDREN}/{child['id']}", token)
    assert deleted.status_code == 404
    assert deleted.json() == {"detail": "Child account not found"}
    assert list_all(stack, CHILDREN, owner_token) == [child]


def test_unknown_child_id_is_not_found_over_grpc(stack, user):
    _, token = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.DeleteChild(account_pb2.DeleteChildRequest(id=987654), metadata=metadata(token))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "Child account not found"
    status = rpc_status.from_call(error.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("CHILD_NOT_FOUND", "devicehub")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"first_name": None}, "first_name is required"),
        ({"first_name": "   "}, "first_name is required"),
        ({"last_name": "x" * 51}, "last_name must be at most 50 characters"),
        ({"birthdate": "2015-13-01"}, DATE_MESSAGE),
        ({"birthdate": "01/02/2015"}, DATE_MESSAGE),
        ({"birthdate": "2015-02-30"}, DATE_MESSAGE),
        ({"birthdate": "2015-W10-1"}, DATE_MESSAGE),
        ({"birthdate": ""}, "birthdate is required"),
        ({"gender": "g" * 21}, "gender must be at most 20 characters"),
    ],
    ids=[
        "missing-first-name",
        "blank-first-name",
        "long-last-name",
        "month-13",
        "slashed-date",
        "feb-30",
        "iso-week-date",
        "empty-birthdate",
        "long-gender",
    ],
)
def test_invalid_child_is_400_and_writes_nothing(stack, user, overrides, message):
    _, token = user
    existing = create_child(stack, token)
    body = {k: v for k, v in child_body(**overrides).items() if v is not None}
    response = stack.request("POST", CHILDREN, token, json=body)
    assert response.status_code == 400
    assert response.json() == {"detail": message}
    assert list_all(stack, CHILDREN, token) == [existing]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"birthdate": "2015-13-01"}, DATE_MESSAGE),
        ({"birthdate": "2015-W10-1"}, DATE_MESSAGE),
        ({"first_name": ""}, "first_name is required"),
        ({"gender": "g" * 21}, "gender must be at most 20 characters"),
    ],
    ids=["month-13", "iso-week-date", "empty-first-name", "long-gender"],
)
def test_invalid_update_is_400_and_leaves_the_child_unchanged(stack, user, change, message):
    _, token = user
    child = create_child(stack, token)
    response = stack.request("PATCH", f"{CHILDREN}/{child['id']}", token, json=change)
    assert response.status_code == 400
    assert response.json() == {"detail": message}
    assert list_all(stack, CHILDREN, token) == [child]


def test_pagination_over_rest_and_grpc(stack, user):
    _, token = user
    children = [create_child(stack, token, first_name=name) for name in ("A", "B", "C")]
    first = stack.request("GET", f"{CHILDREN}?page_size=2", token)
    assert first.status_code == 200
    assert first.json() == children[:2]
    next_token = first.headers.get("x-next-page-token")
    assert next_token
    rest = stack.request("GET", f"{CHILDREN}?page_size=2&page_token={next_token}", token)
    assert rest.status_code == 200
    assert rest.json() == children[2:]
    assert "x-next-page-token" not in rest.headers

    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    page = stub.ListChildren(account_pb2.ListChildrenRequest(page_size=2), metadata=metadata(token))
    assert [c.id for c in page.children] == [c["id"] for c in children[:2]]
    assert page.next_page_token
    last = stub.ListChildren(
        account_pb2.ListChildrenRequest(page_size=2, page_token=page.next_page_token),
        metadata=metadata(token),
    )
    assert [c.id for c in last.children] == [children[2]["id"]]
    assert last.next_page_token == ""


def test_bad_page_token_is_400(stack, user):
    _, token = user
    response = stack.request("GET", f"{CHILDREN}?page_token=nonsense", token)
    assert response.status_code == 400
    assert response.json() == {"detail": "page_token is not a token from an earlier page"}


def test_child_lifecycle_over_grpc(stack, user):
    account, token = user
    auth = metadata(token)
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    created = stub.CreateChild(
        account_pb2.CreateChildRequest(
            child=account_pb2.Child(
                first_name="Yuna", last_name="Kim", birthdate="2015-03-01", gender="female"
            )
        ),
        metadata=auth,
    )
    assert created.id > 0 and created.root_user_id == account["id"]
    assert created.created_at.seconds > 0
    listed = stub.ListChildren(account_pb2.ListChildrenRequest(), metadata=auth)
    assert list(listed.children) == [created]
    assert listed.next_page_token == ""

    updated = stub.UpdateChild(
        account_pb2.UpdateChildRequest(id=created.id, gender="male"), metadata=auth
    )
    expected = account_pb2.Child()
    expected.CopyFrom(created)
    expected.gender = "male"
    assert updated == expected

    cleared = stub.UpdateChild(
        account_pb2.UpdateChildRequest(id=created.id, birthdate="2016-04-02"), metadata=auth
    )
    assert (cleared.first_name, cleared.gender, cleared.birthdate) == ("Yuna", "male", "2016-04-02")

    stub.DeleteChild(account_pb2.DeleteChildRequest(id=created.id), metadata=auth)
    assert list(stub.ListChildren(account_pb2.ListChildrenRequest(), metadata=auth).children) == []
    with pytest.raises(grpc.RpcError) as error:
        stub.UpdateChild(account_pb2.UpdateChildRequest(id=created.id, gender="x"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_invalid_child_over_grpc_is_invalid_argument(stack, user):
    _, token = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateChild(
            account_pb2.CreateChildRequest(
                child=account_pb2.Child(first_name="A", last_name="B", birthdate="2015-13-01")
            ),
            metadata=metadata(token),
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == DATE_MESSAGE
    listed = stub.ListChildren(account_pb2.ListChildrenRequest(), metadata=metadata(token))
    assert list(listed.children) == []


# --- the caller's own account: deletion, password, admin rights ------------------------
# (that each revokes the account's tokens on every worker: test_revocation.py)

ME = "/api/v1/accounts/me"
PASSWORD = "/api/v1/accounts/me/password"


def admin_path(account_id) -> str:
    return f"/api/v1/accounts/{account_id}/admin"


def test_delete_my_account_over_rest_with_trailing_slash(stack, user):
    account, token = user
    create_child(stack, token)
    deleted = stack.request("DELETE", ME + "/", token)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    # The other worker may take a moment to hear of it (test_revocation.py).
    deadline = time.monotonic() + 5
    while (me := stack.request("GET", ME, token)).status_code != 401:
        assert time.monotonic() < deadline, me.text
        time.sleep(0.05)
    assert me.json() == {"detail": "Could not validate credentials"}
    login = stack.request(
        "POST",
        "/api/v1/auth/token",
        json={"username": account["username"], "password": "password-123"},
    )
    assert login.status_code == 401
    # The username is free again.
    again = stack.request(
        "POST",
        "/api/v1/auth/register",
        json={"username": account["username"], "password": "password-123"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] != account["id"]


def test_delete_my_account_over_grpc(stack, user):
    _, token = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    stub.DeleteMyAccount(account_pb2.DeleteMyAccountRequest(), metadata=metadata(token))
    with pytest.raises(grpc.RpcError) as error:
        stub.DeleteMyAccount(account_pb2.DeleteMyAccountRequest(), metadata=metadata(token))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_current_password_is_403_and_changes_nothing(stack, user):
    account, token = user
    response = stack.request(
        "POST",
        PASSWORD + "/",
        token,
        json={"current_password": "not-my-password", "new_password": "new-password-456"},
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "Current password is incorrect"}
    assert stack.request("GET", ME, token).status_code == 200
    assert stack.login(account["username"], "password-123")


def test_too_short_new_password_is_400_and_changes_nothing(stack, user):
    account, token = user
    response = stack.request(
        "POST", PASSWORD, token, json={"current_password": "password-123", "new_password": "short"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "password must be 8 to 256 characters"}
    assert stack.request("GET", ME, token).status_code == 200
    assert stack.login(account["username"], "password-123")


def test_change_password_over_grpc(stack, user):
    account, token = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    with pytest.raises(grpc.RpcError) as error:
        stub.ChangeMyPassword(
            account_pb2.ChangeMyPasswordRequest(
                current_password="wrong-password", new_password="new-password-456"
            ),
            metadata=metadata(token),
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    status = rpc_status.from_call(error.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert info.reason == "INVALID_CREDENTIALS"
    stub.ChangeMyPassword(
        account_pb2.ChangeMyPasswordRequest(
            current_password="password-123", new_password="new-password-456"
        ),
        metadata=metadata(token),
    )
    new_token = stack.login(account["username"], "new-password-456")
    me = stub.GetMyAccount(account_pb2.GetMyAccountRequest(), metadata=metadata(new_token))
    assert me.id == account["id"]


def test_only_admins_change_admin_rights_and_not_their_own(stack, user):
    _, token = user
    other, _ = stack.new_user()
    refused = stack.request("PUT", admin_path(other["id"]), token, json={"is_admin": True})
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only admins may change an account's admin rights"}
    admin_id = stack.request("GET", ME, stack.admin_token).json()["id"]
    own = stack.request("PUT", admin_path(admin_id), stack.admin_token, json={"is_admin": False})
    assert own.status_code == 403
    assert own.json() == {"detail": "Admins cannot change their own admin rights"}
    missing = stack.request(
        "PUT", admin_path(98_765_432), stack.admin_token, json={"is_admin": True}
    )
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Account not found"}
    malformed = stack.request("PUT", admin_path("abc"), stack.admin_token, json={"is_admin": True})
    assert malformed.status_code == 400, malformed.text
    assert set(malformed.json()) == {"detail"}
    assert stack.request("GET", ME, token).json()["is_admin"] is False
    assert query_database(stack, "SELECT is_admin FROM account WHERE id = ?", (other["id"],)) in (
        [(0,)],
        [(False,)],
    )


def test_setting_the_admin_flag_it_has_revokes_nothing(stack, user):
    account, token = user
    response = stack.request(
        "PUT", admin_path(account["id"]) + "/", stack.admin_token, json={"is_admin": False}
    )
    assert response.status_code == 200, response.text
    assert response.json() == account
    assert stack.request("GET", ME, token).status_code == 200


def test_set_account_admin_over_grpc(stack, user):
    account, _ = user
    stub = account_pb2_grpc.AccountServiceStub(stack.channel())
    promoted = stub.SetAccountAdmin(
        account_pb2.SetAccountAdminRequest(id=account["id"], is_admin=True),
        metadata=metadata(stack.admin_token),
    )
    assert (promoted.id, promoted.is_admin) == (account["id"], True)
    with pytest.raises(grpc.RpcError) as error:
        stub.SetAccountAdmin(
            account_pb2.SetAccountAdminRequest(id=987_654, is_admin=True),
            metadata=metadata(stack.admin_token),
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    fresh = stack.login(account["username"], "password-123")
    me = stub.GetMyAccount(account_pb2.GetMyAccountRequest(), metadata=metadata(fresh))
    assert me.is_admin is True
