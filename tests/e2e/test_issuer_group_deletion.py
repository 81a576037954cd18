"""Deleting one CA row of an issuer group (a root re-issued with the same name and key and
imported again) must not un-revoke what that row issued: its certificates still verify under
the rows that stay, so the group's CRLs (full and delta) and OCSP keep listing them as
revoked until they expire. Deleting the last row of a group takes its revocations with it:
nothing here speaks for that issuer any more. Both storage backends."""

import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.helpers import API, create_intermediate, data, db_rows, error, unique
from tests.e2e.test_crl import entry_reason, fetch, listed, number, pem_file, verify, wait_for_crl
from tests.e2e.test_issuer_groups import (
    ROWS,
    Reissued,
    ask,
    import_root,
    imported_group,
    leaf,
    reissued_root,
    revoke,
    until_status,
)
from tests.support import Server
from tests.tools import openssl

COMPROMISED = x509.ReasonFlags.key_compromise


def new_group(server: Server, folder: Path, name: str) -> Reissued:
    """A fresh group of two rows: "old" (one year, the group's oldest, which holds its CRL
    number sequence) and "new" (two years, so the one that signs OCSP answers)."""
    common_name = unique(name)
    with server.client() as api:
        rows, key_pem = imported_group(api, common_name)
    group = Reissued(folder, rows, {}, key_pem, common_name)
    for row, view in rows.items():
        group.path(row).write_text(view["pem"])
    return group


def settled(server: Server, group: Reissued) -> tuple[bytes, x509.CertificateRevocationList]:
    """The group's full CRL once both rows' first scheduled publications are done: the base
    that later delta CRLs refer to (only scheduled and manual publications move it)."""
    with server.client() as api:
        for _ in range(300):
            views = [data(api.get(f"{API}/crl/{group.rows[row]['id']}")) for row in ROWS]
            numbers = {view["crl_number"] for view in views}
            if all(view["status"] == "published" for view in views) and len(numbers) == 1:
                break
            wait_for_crl(server, group.rows["new"]["id"], lambda crl: True)
        (current,) = numbers
    return wait_for_crl(server, group.rows["new"]["id"], lambda crl: number(crl) >= current)


def kept_under(server: Server, certificate_id: int) -> list[int]:
    """The CA rows the kept CRL entry of a deleted certificate is filed under."""
    sql = "SELECT ca_id FROM crl_retained_entries WHERE certificate_id = ?"
    return [row[0] for row in db_rows(server, sql, certificate_id)]


def withdrawn(server: Server, reference: object) -> bool:
    """Whether the CA's distribution point answers 404 once the cached CRL is checked again
    (each process checks the stored one at most once a second)."""
    deadline = time.monotonic() + 10
    while fetch(server, reference).status_code != 404:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def emptied_and_deleted(api: httpx.Client, ca_id: int, certificate_id: int) -> None:
    """Delete the CA's certificates (`certificate_id` among them), then the CA. It signs the
    group's OCSP answers by now: deleting its responder certificate is a change the responder
    follows by issuing another, so the CA may have one again; delete that too."""
    for attempt in range(20):
        query = {"ca_id": ca_id, "per_page": 100}
        issued = {cert["id"] for cert in data(api.get(f"{API}/certificates", params=query))}
        assert attempt or certificate_id in issued
        for cert_id in issued:
            api.delete(f"{API}/certificates/{cert_id}")  # 404 if the responder's was replaced
        if (response := api.delete(f"{API}/cas/{ca_id}")).status_code == 204:
            return
        assert response.status_code == 409 and "delete them first" in response.text
        time.sleep(0.3)
    raise AssertionError(f"CA {ca_id} kept getting certificates")


def deleted(api: httpx.Client, path: str) -> None:
    response = api.delete(f"{API}/{path}")
    assert response.status_code == 204, response.text


def test_deleting_a_row_keeps_its_revocations_on_the_groups_crls_and_ocsp(
    server: Server, workdir: Path
) -> None:
    """A certificate and a subordinate CA revoked under the row to be deleted (and deleted
    first: a CA with certificates or subordinates is not deleted) stay revoked on the CRL the
    row that stays serves, in its delta against a base fetched before they were revoked, and
    in OCSP answers, all checked by openssl; the CRL number sequence goes on."""
    group = new_group(server, workdir, "Deleted Row Root")
    old, new = group.rows["old"]["id"], group.rows["new"]["id"]
    base_der, base = settled(server, group)
    with server.client() as api:
        gone = leaf(api, old, "deleted-row-leaf")
        sub = create_intermediate(api, old, unique("Deleted Row Sub"), validity_days=90)
        sub["pem"] = data(api.get(f"{API}/cas/{sub['id']}"))["pem"]
        revoke(api, gone)
        data(api.post(f"{API}/cas/{sub['id']}/revoke", json={"reason": "keyCompromise"}))
        serials = (gone["serial_number"], sub["serial_number"])
        _, before = wait_for_crl(server, new, lambda c: all(listed(s)(c) for s in serials))
        deleted(api, f"certificates/{gone['id']}")
        deleted(api, f"cas/{sub['id']}")
        deleted(api, f"cas/{old}")
        # A revocation under the row that stays republishes the group, keeping the base.
        later = leaf(api, new, "after-the-deletion")
        revoke(api, later)
    for name, pem in (("gone", gone["pem"]), ("sub", sub["pem"]), ("later", later["pem"])):
        group.path(name).write_text(pem)
    every = (*serials, later["serial_number"])
    full_der, full = wait_for_crl(server, new, lambda c: all(listed(s)(c) for s in every))
    delta_der, delta = wait_for_crl(
        server, new, lambda c: all(listed(s)(c) for s in every), kind="delta"
    )
    assert number(full) > number(before)  # the sequence the deleted row held goes on
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value
    assert indicator.crl_number <= number(base) and not any(listed(s)(base) for s in serials)
    for crl in (full, delta):
        assert all(entry_reason(crl, serial) == COMPROMISED for serial in every)
    assert withdrawn(server, old)

    text = openssl("crl", "-inform", "DER", "-noout", "-text", input=full_der).stdout.decode()
    for serial in serials:
        digits = f"{int(serial.removeprefix('0x'), 16):X}"
        digits = digits.zfill(len(digits) + len(digits) % 2)  # whole octets, as openssl prints
        assert f"Serial Number: {digits}" in text, text
    assert text.count("Key Compromise") >= len(every), text
    full_pem = pem_file(workdir, "full", full_der)
    anchor = ["-crl_check", "-CAfile", str(group.path("new"))]
    status, out = verify(*anchor, "-CRLfile", str(full_pem), str(group.path("gone")))
    assert status != 0 and "certificate revoked" in out, out
    # A relying party holding the base from before the revocations, and the new delta.
    pair = [str(pem_file(workdir, "base", base_der)), str(pem_file(workdir, "delta", delta_der))]
    with_delta = [*anchor, "-use_deltas", "-CRLfile", pair[0], "-CRLfile", pair[1]]
    status, out = verify(*with_delta, str(group.path("gone")))
    assert status != 0 and "certificate revoked" in out, out
    status, out = verify(*anchor, "-CRLfile", pair[0], str(group.path("gone")))
    assert status == 0, out  # the base alone does not list it: the delta did

    for name in ("gone", "sub"):
        out = ask(server, group.path("new"), group.path(name), "-nonce")  # read fresh
        assert f"{group.path(name)}: revoked" in out and "Response verify OK" in out, out
        assert "Reason: keyCompromise" in out, out
        until_status(server, group.path("new"), group.path(name), "revoked", "-no_nonce")


def test_a_refused_deletion_moves_nothing_and_a_bulk_deletion_hands_over(
    server: Server, workdir: Path
) -> None:
    """A deletion refused (409: the row still has a certificate) leaves everything as it
    was. In a bulk deletion that refuses one row and deletes the other, the deleted row's
    revocations pass to the one refused. Deleting that last row too takes them with it (its
    distribution point is withdrawn; OCSP stops answering once responders regroup)."""
    group = new_group(server, workdir, "Bulk Deleted Row Root")
    old, new = group.rows["old"]["id"], group.rows["new"]["id"]
    with server.client() as api:
        kept = leaf(api, old, "kept-under-old")
        gone = leaf(api, new, "kept-under-new")
        busy = leaf(api, old, "still-issued")  # holds its row back
        for cert in (kept, gone):
            revoke(api, cert)
            group.path(str(cert["id"])).write_text(cert["pem"])
            deleted(api, f"certificates/{cert['id']}")
        assert "delete them first" in error(api.delete(f"{API}/cas/{old}"), 409)
        assert (kept_under(server, kept["id"]), kept_under(server, gone["id"])) == ([old], [new])
        result = data(api.post(f"{API}/cas/bulk/delete", json={"ids": [old, new]}))
        assert (result["success"], result["failed"]) == ([new], [old]), result
        assert (kept_under(server, kept["id"]), kept_under(server, gone["id"])) == ([old], [old])
    # No regeneration asked: the deletion makes the group's CRLs due at once (a revocation
    # under the deleted row may not have been published yet).
    serials = (kept["serial_number"], gone["serial_number"])
    _, crl = wait_for_crl(server, old, lambda c: all(listed(s)(c) for s in serials))
    assert all(entry_reason(crl, serial) == COMPROMISED for serial in serials)
    out = ask(server, group.path("old"), group.path(str(gone["id"])), "-nonce")
    assert f"{group.path(str(gone['id']))}: revoked" in out, out

    with server.client() as api:  # the last row of the group
        emptied_and_deleted(api, old, busy["id"])
    assert (kept_under(server, kept["id"]), kept_under(server, gone["id"])) == ([], [])
    assert withdrawn(server, old)


def test_a_ca_imported_again_numbers_its_crls_above_those_it_published(
    server: Server, tmp_path: Path
) -> None:
    """RFC 5280 5.2.3: CRL numbers increase for a given CRL issuer. Deleting the last CA of
    a group and importing the same certificate and key again is the same issuer to relying
    parties, who may hold its CRLs numbered so far: they start over at 1 no more."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pem = reissued_root(key, unique("Imported Again Root"), 365)
    with server.client() as api:
        first = import_root(api, pem, key_pem)
        wait_for_crl(server, first["id"], lambda crl: True)
        for _ in range(3):  # numbers well above where a new sequence starts
            published = data(api.post(f"{API}/crl/{first['id']}/regenerate"))["crl_number"]
        wait_for_crl(server, first["id"], lambda c: number(c) >= published)  # served
        emptied_and_deleted(api, first["id"], leaf(api, first["id"], "imported-again")["id"])
        assert withdrawn(server, first["id"])

        again = import_root(api, pem, key_pem)
        _, renewed = wait_for_crl(server, again["id"], lambda crl: True)
        assert number(renewed) > published + 1  # above the delta published with it too
        regenerated = data(api.post(f"{API}/crl/{again['id']}/regenerate"))
        assert regenerated["crl_number"] > number(renewed)
