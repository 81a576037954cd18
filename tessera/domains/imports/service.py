"""Smart import: say what a pasted or uploaded bundle holds, then import all of it.

`analyze` reads everything (PEM text with any number of objects, or one DER, PKCS#12 or
PKCS#7 file) and describes each object: certificate or CA certificate, CSR, private key
(encrypted or not), with the links between them (which key belongs to which certificate or
CSR, which certificate issued which) and what is already in the inventory.

`execute` imports in dependency order, each object in its own savepoint so one refusal leaves
the rest imported: CA certificates first (parents before children) as CAs, then certificates,
linked to their issuing CA; a key goes with the certificate, CA or CSR whose public key it
matches (encrypted at rest), or to a certificate already here without its key; CSRs go to the
CSR inventory. Every stored object writes its own audit row.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509

from tessera.core import inspect
from tessera.core.errors import Conflict, TesseraError
from tessera.core.formats import csr_pem, key_pem, public_key_der, secret
from tessera.core.keys import PrivateKey
from tessera.core.uploads import Found, read_objects
from tessera.domains import audit
from tessera.domains.cas.service import CAService
from tessera.domains.certificates.service import CertificateService
from tessera.domains.csrs.service import CSRService
from tessera.domains.issuance import Issuance
from tessera.domains.tools.describe import certificate_summary, csr_facts, key_facts

FORMATS = {
    "formats": [
        {
            "name": "PEM",
            "extensions": [".pem", ".crt", ".cer", ".key", ".csr"],
            "description": "Base64 with BEGIN/END lines; any number of certificates, keys "
            "and CSRs, with text before, between and after them",
        },
        {
            "name": "DER",
            "extensions": [".der", ".cer"],
            "description": "Binary ASN.1: one certificate, CSR or private key",
        },
        {
            "name": "PKCS#12",
            "extensions": [".p12", ".pfx"],
            "description": "Password-protected bundle: certificate, private key and chain",
        },
        {
            "name": "PKCS#7",
            "extensions": [".p7b", ".p7c"],
            "description": "Certificates (a chain) without keys, in PEM or DER",
        },
    ],
    "object_types": [
        {"type": "certificate", "description": "X.509 certificate (end entity)"},
        {"type": "ca_certificate", "description": "CA certificate (CA:TRUE), imported as a CA"},
        {"type": "csr", "description": "PKCS#10 certificate signing request"},
        {"type": "private_key", "description": "RSA, EC or Ed25519 key, encrypted or not"},
        {"type": "pkcs12", "description": "a PKCS#12 file that could not be opened"},
        {"type": "pkcs7", "description": "a PKCS#7 bundle that could not be read"},
        {"type": "crl", "description": "a CRL (reported, not imported)"},
        {"type": "public_key", "description": "a bare public key (reported, not imported)"},
        {"type": "unknown", "description": "another PEM block (reported, not imported)"},
    ],
    "transport": "JSON {content, password, options}: PEM text, or base64 of a binary file "
    "(optionally prefixed with 'BASE64:'); or multipart/form-data with a 'file' part",
}


@dataclass(frozen=True)
class ExecuteOptions:
    import_cas: bool = True
    import_certificates: bool = True
    import_keys: bool = True
    import_csrs: bool = True


@dataclass
class _Item:
    index: int
    found: Found
    spki: bytes | None
    outcome: dict[str, Any] | None = None
    # for a key: the objects it was offered to (a certificate and its CSR may share it, and
    # so may a certificate given twice)
    claimed_by: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    items: list[_Item]
    keys: dict[bytes, _Item] = field(default_factory=dict)
    # for the keys alone (by SPKI): the stored certificates they belong to, (id, has a key)
    stored: dict[bytes, list[tuple[int, bool]]] = field(default_factory=dict)

    def key_for(self, item: _Item) -> _Item | None:
        return self.keys.get(item.spki) if item.spki is not None else None

    def alone(self, item: _Item) -> bool:
        """A readable key that no other object of the content matches: it can only belong
        to a certificate already in the inventory."""
        if item.found.key is None or item.found.problem:
            return False
        return not any(i is not item and i.spki == item.spki for i in self.items)


class ImportService:
    def __init__(self, issuance: Issuance, now: datetime) -> None:
        self._issuance = issuance
        self._repos = issuance.repos
        self._actor = issuance.actor
        self._now = now
        self._certificates = CertificateService(issuance, now)

    # --- analyze --------------------------------------------------------------------------

    def analyze(self, data: bytes, password: str | None) -> dict[str, Any]:
        content = read_objects(data, secret(password))
        plan = self._stored_keys(_plan(content.objects))
        objects = [self._describe(item, plan) for item in plan.items]
        summary = _summary(objects)
        overall = content.format if content.format in ("pkcs12", "pkcs7") else "bundle"
        if len(objects) == 1 and overall == "bundle":
            overall = objects[0]["type"]
        return {
            "type": overall,
            "format": content.format,
            "details": objects[0]["details"] if len(objects) == 1 else summary,
            "objects": objects,
            "summary": summary,
        }

    def _describe(self, item: _Item, plan: _Plan) -> dict[str, Any]:
        found = item.found
        body: dict[str, Any] = {
            "index": item.index,
            "type": _type(found),
            "format": found.encoding,
            "container": found.container,
        }
        if found.problem:
            return {**body, "error": found.problem, "details": {"encrypted": found.encrypted}}
        key = plan.key_for(item)
        details: dict[str, Any]
        if found.certificate is not None:
            details = self._certificate_details(found.certificate, plan)
        elif found.csr is not None:
            details = csr_facts(found.csr)
            row = CSRService(self._issuance, self._now).same_request(found.csr)
            details["existing"] = {"type": "csr", "id": row.id} if row is not None else None
        else:
            details = self._key_details(item, plan)
        if key is not None and key is not item:
            details["private_key_index"] = key.index
        return {**body, "details": details}

    def _certificate_details(self, cert: x509.Certificate, plan: _Plan) -> dict[str, Any]:
        details = certificate_summary(cert, self._now)
        details["san"] = inspect.sans(cert)
        details["issuer_index"] = next(
            (
                i.index
                for i in plan.items
                if i.found.certificate is not None
                and i.found.certificate is not cert
                and i.found.certificate.subject == cert.issuer
            ),
            None,
        )
        details["existing"] = self._existing(cert)
        return details

    def _key_details(self, item: _Item, plan: _Plan) -> dict[str, Any]:
        assert item.found.key is not None
        matches = [i.index for i in plan.items if i is not item and i.spki == item.spki]
        details = {
            **key_facts(item.found.key.public_key()),
            "encrypted": item.found.encrypted,
            "matches": matches,
        }
        if plan.alone(item):  # which stored certificates it is the key of, if any
            details["existing"] = _stored(plan.stored.get(item.spki or b"", []))
        return details

    def _stored_keys(self, plan: _Plan) -> _Plan:
        """Look the keys that came alone up among the stored certificates, all in one pass."""
        alone = [i.found.key for i in plan.items if plan.alone(i) and i.found.key is not None]
        plan.stored = self._certificates.with_public_keys(alone) if alone else {}
        return plan

    def _existing(self, cert: x509.Certificate) -> dict[str, Any] | None:
        row = self._certificates.by_fingerprint(cert)
        if row is not None:
            return {"type": "certificate", "id": row.id}
        ca = CAService(self._issuance).same_certificate(cert)
        return {"type": "ca", "id": ca.id} if ca is not None else None

    # --- execute --------------------------------------------------------------------------

    def execute(self, data: bytes, password: str | None, options: ExecuteOptions) -> dict[str, Any]:
        content = read_objects(data, secret(password))
        plan = _plan(content.objects)
        if options.import_keys:
            self._stored_keys(plan)
        cas = [i for i in plan.items if _type(i.found) == "ca_certificate" and not i.found.problem]
        leaves = [i for i in plan.items if _type(i.found) == "certificate" and not i.found.problem]
        csrs = [i for i in plan.items if i.found.csr is not None]
        alone = [i for i in plan.items if plan.alone(i)]
        if cas and options.import_cas:
            self._certificates.require("write:cas")
        if csrs and options.import_csrs:
            self._certificates.require("write:csrs")
        if (
            (cas and options.import_cas)
            or (leaves and options.import_certificates)
            or (csrs and options.import_csrs)
            or (alone and options.import_keys)
        ):
            # Held before any step writes: a step that adds a key to an object here already
            # appends an audit row (the chain's head, locked) before a later step's duplicate
            # check holds the organization, the reverse of a certificate import's order
            # (organization, then audit): on PostgreSQL the two would deadlock.
            self._repos.organizations.hold(self._repos.org_id)
        for item in _parents_first(cas):
            self._step(item, options.import_cas, lambda i: self._store_ca(i, plan, options))
        for item in leaves:
            self._step(
                item, options.import_certificates, lambda i: self._store_leaf(i, plan, options)
            )
        for item in csrs:
            self._step(item, options.import_csrs, lambda i: self._store_csr(i, plan, options))
        for item in alone:
            self._step(item, options.import_keys, lambda i: self._store_lone_key(i, plan))
        for item in plan.items:
            self._settle(item, plan, options)
        return self._report(plan)

    def _step(self, item: _Item, wanted: bool, store: Callable[[_Item], dict[str, Any]]) -> None:
        if not wanted:
            item.outcome = _skipped(item, "not selected in options")
            return
        try:
            with self._repos.session.begin_nested():
                item.outcome = store(item)
        except Conflict as exc:
            item.outcome = _skipped(item, exc.message)
        except TesseraError as exc:
            item.outcome = _failed(item, exc.message)

    def _store_ca(self, item: _Item, plan: _Plan, options: ExecuteOptions) -> dict[str, Any]:
        assert item.found.certificate is not None
        key = self._take_key(item, plan, options)
        existing = self._certificates.same_ca(item.found.certificate)
        if existing is not None and key is not None and existing.encrypted_private_key is None:
            self._certificates.attach_ca_key(existing, key)
            outcome = _imported(item, "ca", existing.id, True)
            return {**outcome, "status": "updated", "message": "already present; key added"}
        ca = self._certificates.store_imported_ca(item.found.certificate, key, None)
        return _imported(item, "ca", ca.id, key is not None)

    def _store_leaf(self, item: _Item, plan: _Plan, options: ExecuteOptions) -> dict[str, Any]:
        cert = item.found.certificate
        assert cert is not None
        key = self._take_key(item, plan, options)
        existing = self._certificates.by_fingerprint(cert)
        if existing is not None and key is not None and existing.encrypted_private_key is None:
            self._certificates.attach_key(existing, key)
            outcome = _imported(item, "certificate", existing.id, True)
            return {**outcome, "status": "updated", "message": "already present; key added"}
        row = self._certificates.store_imported(cert, key, None)
        return {**_imported(item, "certificate", row.id, key is not None), "ca_id": row.ca_id}

    def _store_csr(self, item: _Item, plan: _Plan, options: ExecuteOptions) -> dict[str, Any]:
        assert item.found.csr is not None
        service = CSRService(self._issuance, self._now)
        key = self._take_key(item, plan, options)
        # Two imports of one CSR at once would both find none and both store it (as for
        # certificates, CertificateService.store_imported).
        self._repos.organizations.hold(self._repos.org_id)
        existing = service.same_request(item.found.csr)
        if existing is not None:  # a duplicate, as for certificates: at most its key is new
            if key is None or existing.encrypted_private_key is not None:
                raise Conflict(f"this CSR is already present (CSR {existing.id})")
            service.attach_key(existing.id, key_pem(key), None)  # refused once it is signed
            outcome = _imported(item, "csr", existing.id, True)
            return {**outcome, "status": "updated", "message": "already present; key added"}
        row = service.upload(csr_pem(item.found.csr).encode("ascii"), None, "import")
        if key is not None:
            service.attach_key(row.id, key_pem(key), None)
        return _imported(item, "csr", row.id, key is not None)

    def _store_lone_key(self, item: _Item, plan: _Plan) -> dict[str, Any]:
        """A key that came alone goes to the stored certificates it belongs to that are here
        without their key (a reused key may belong to several: each gets it)."""
        key = item.found.key
        assert key is not None and item.spki is not None
        stored = plan.stored.get(item.spki, [])
        if not stored:
            return _skipped(
                item, "no certificate, CA or CSR in the content or the inventory matches this key"
            )
        keyless = [cert_id for cert_id, has_key in stored if not has_key]
        if not keyless:
            raise Conflict(f"certificate {stored[0][0]} already has its private key")
        for cert_id in keyless:
            self._certificates.attach_key(self._certificates.get(cert_id), key)
        named = ", ".join(str(cert_id) for cert_id in keyless)
        return {
            **_imported(item, "certificate", keyless[0], True),
            "ids": keyless,
            "status": "updated",
            "message": f"key added to certificate {named}, already in the inventory",
        }

    def _take_key(self, item: _Item, plan: _Plan, options: ExecuteOptions) -> PrivateKey | None:
        """The content's key for this object, if keys are wanted; the key remembers it."""
        holder = plan.key_for(item)
        if holder is None or holder is item or not options.import_keys or holder.found.key is None:
            return None
        holder.claimed_by.append(item.index)
        return holder.found.key

    def _settle(self, item: _Item, plan: _Plan, options: ExecuteOptions) -> None:
        """What became of what no step stored: keys (with their object, or not), and objects
        that could not be read."""
        if item.outcome is not None:
            return
        found = item.found
        if found.problem:
            item.outcome = _failed(item, found.problem)
        elif found.key is not None and item.claimed_by:
            owners = [plan.items[index].outcome or {} for index in item.claimed_by]
            keeper = next((owner for owner in owners if owner.get("with_key")), None)
            if keeper is not None:
                item.outcome = _linked(item, keeper["index"])
            else:
                why = owners[0].get("message", "it was not imported")
                item.outcome = _skipped(item, f"its object {item.claimed_by[0]}: {why}")
        elif found.key is not None:
            item.outcome = _skipped(
                item,
                "not selected in options"
                if not options.import_keys
                else "no certificate, CA or CSR in the content matches this key",
            )
        else:
            item.outcome = _skipped(item, "nothing to import")

    def _report(self, plan: _Plan) -> dict[str, Any]:
        results = [item.outcome or _skipped(item, "nothing to import") for item in plan.items]
        counts = {
            "cas_imported": _count(results, "ca"),
            "certificates_imported": _count(results, "certificate"),
            "csrs_imported": _count(results, "csr"),
            "keys_matched": sum(1 for r in results if r["status"] == "linked" or _key_added(r)),
        }
        if any(counts.values()):
            audit.record(self._repos.audit, self._actor, "import.execute", "import", None, counts)
        return {
            **counts,
            "results": results,
            "errors": [r for r in results if r["status"] == "failed"],
            "skipped": [r for r in results if r["status"] == "skipped"],
        }


def _plan(objects: list[Found]) -> _Plan:
    items = [_Item(i, found, _spki(found)) for i, found in enumerate(objects)]
    plan = _Plan(items)
    for item in items:
        if item.found.key is not None and item.spki is not None:
            plan.keys.setdefault(item.spki, item)
    return plan


def _spki(found: Found) -> bytes | None:
    if found.certificate is not None:
        return public_key_der(found.certificate.public_key())
    if found.csr is not None:
        return public_key_der(found.csr.public_key())
    if found.key is not None:
        return public_key_der(found.key.public_key())
    return None


def _type(found: Found) -> str:
    if found.certificate is not None and inspect.is_ca(found.certificate):
        return "ca_certificate"
    return found.kind


def _parents_first(items: list[_Item]) -> list[_Item]:
    """CA certificates ordered so that each comes after its issuers (by name) when they are in
    the content too; a cycle (cross-signing) is broken where it closes. Each name is read once
    and issuers are looked up by name, so a long chain costs little (comparing every pair
    again for every place taken cost minutes for a few hundred CAs)."""
    names = {item.index: _names(item) for item in items}
    by_subject: dict[x509.Name, list[_Item]] = {}
    for item in items:
        by_subject.setdefault(names[item.index][0], []).append(item)
    ordered: list[_Item] = []
    seen: set[int] = set()  # placed, or on the way to being placed
    for start in items:
        stack = [start] if start.index not in seen else []
        while stack:
            item = stack[-1]
            seen.add(item.index)
            subject, issuer = names[item.index]
            issuers = [] if issuer == subject else by_subject.get(issuer, [])
            waiting = next((i for i in issuers if i.index not in seen), None)
            if waiting is not None:
                stack.append(waiting)
            else:
                ordered.append(stack.pop())
    return ordered


def _names(item: _Item) -> tuple[x509.Name, x509.Name]:
    cert = item.found.certificate
    assert cert is not None
    return cert.subject, cert.issuer


def _summary(objects: list[dict[str, Any]]) -> dict[str, int]:
    def count(kind: str) -> int:
        return sum(1 for o in objects if o["type"] == kind and "error" not in o)

    return {
        "total": len(objects),
        "certificates": count("certificate"),
        "cas": count("ca_certificate"),
        "csrs": count("csr"),
        "private_keys": count("private_key"),
        "unreadable": sum(1 for o in objects if "error" in o),
    }


def _imported(item: _Item, resource: str, row_id: int | None, with_key: bool) -> dict[str, Any]:
    return {
        "index": item.index,
        "type": _type(item.found),
        "status": "imported",
        "resource": resource,
        "id": row_id,
        "with_key": with_key,
    }


def _linked(item: _Item, owner: int) -> dict[str, Any]:
    return {"index": item.index, "type": _type(item.found), "status": "linked", "linked_to": owner}


def _skipped(item: _Item, message: str) -> dict[str, Any]:
    return {"index": item.index, "type": _type(item.found), "status": "skipped", "message": message}


def _failed(item: _Item, message: str) -> dict[str, Any]:
    return {"index": item.index, "type": _type(item.found), "status": "failed", "message": message}


def _key_added(result: dict[str, Any]) -> bool:
    """A key that came alone and was added to certificates already here."""
    return result["type"] == "private_key" and result["status"] == "updated"


def _stored(matches: list[tuple[int, bool]]) -> dict[str, Any] | None:
    """The stored certificates a key belongs to (newest first), for `analyze`."""
    if not matches:
        return None
    ids = [cert_id for cert_id, _ in matches]
    with_key = [cert_id for cert_id, has_key in matches if has_key]
    return {"type": "certificate", "id": ids[0], "ids": ids, "with_key": with_key}


def _count(results: list[dict[str, Any]], resource: str) -> int:
    return sum(1 for r in results if r["status"] == "imported" and r.get("resource") == resource)
