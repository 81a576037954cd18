"""Which addresses an http-01 redirect may connect to: a loopback, link-local, unspecified
or multicast address only when the challenge's first request connected to an address of that
same kind (a private CA's identifiers legitimately resolve to private addresses, which any
hop may reach)."""

import pytest

from tessera.domains.acme.http01 import address_kind, may_connect


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("10.1.2.3", None),
        ("192.168.1.1", None),
        ("fd00::1", None),
        ("203.0.113.7", None),
        ("2001:db8::1", None),
    ],
)
def test_address_kind(address: str, kind: str | None) -> None:
    assert address_kind(address) == kind


def test_the_first_request_may_connect_anywhere() -> None:
    for address in ("127.0.0.1", "169.254.169.254", "10.0.0.1", "203.0.113.7"):
        assert may_connect(0, address, None)


def test_a_redirect_reaches_a_guarded_kind_only_when_the_first_request_did() -> None:
    # The identifier on a routable or private address: no loopback nor metadata endpoint.
    for address in ("127.0.0.1", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1"):
        assert not may_connect(1, address, None), address
    assert may_connect(2, "10.0.0.2", None)  # private addresses stay reachable
    assert may_connect(1, "203.0.113.8", None)
    # The identifier on loopback (as in the tests): loopback redirects keep working, and
    # still no link-local one.
    assert may_connect(1, "127.0.0.2", "loopback")
    assert may_connect(3, "::1", "loopback")
    assert not may_connect(1, "169.254.169.254", "loopback")
    assert may_connect(1, "169.254.169.254", "link-local")
    assert not may_connect(1, "127.0.0.1", "link-local")
    assert may_connect(1, "192.168.0.5", "loopback")
