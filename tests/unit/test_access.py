"""Who a request comes from: ZAP user ids back to callers, and what each role may do."""

from __future__ import annotations

import zmq

from broker.access import NOBODY, OPEN, Callers, Role, user_id


def test_a_user_id_names_role_key_and_name_even_when_the_key_holds_colons() -> None:
    callers = Callers()
    for _ in range(50):  # z85 keys often contain ":"
        key = zmq.curve_keypair()[0].decode()
        caller = callers.of(user_id("client", key, "alice:laptop"))
        assert (caller.role, caller.key, caller.name) == (Role.CLIENT, key, "alice:laptop")
    assert callers.of(user_id("admin", "k" * 40, "ops")) is callers.of("admin:" + "k" * 40 + ":ops")


def test_roles_decide_visibility_and_shutdown() -> None:
    callers = Callers()
    client, admin = (callers.of(user_id(r, "k" * 40, "n")) for r in ("client", "admin"))
    assert not client.sees_all and not client.may_change_service and client.owner == "k" * 40
    assert admin.sees_all and admin.may_change_service
    assert Callers(secured=False).of("") is OPEN and OPEN.sees_all and OPEN.may_change_service
    assert callers.of("") is NOBODY and not NOBODY.sees_all and not NOBODY.may_change_service
    assert OPEN.owner == ""
