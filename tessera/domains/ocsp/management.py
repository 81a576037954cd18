"""What /api/v2/ocsp/status and /api/v2/ocsp/stats report."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tessera.config import Settings
from tessera.domains.issuer_groups import groups, holds_key
from tessera.domains.ocsp.responder import Responder
from tessera.storage.repositories import Repositories
from tessera.storage.repositories.ocsp import OCSPRepository


@dataclass
class OCSPManagement:
    repos: Repositories
    settings: Settings
    responder: Responder
    url: str

    def status(self, now: datetime) -> dict[str, Any]:
        ocsp = OCSPRepository(self.repos.session)
        responders = []
        cas = self.repos.cas.all()
        # disabled ones too; a row without the key when another of its issuer group has it
        served = {ca.id for group in groups(cas) if any(map(holds_key, group)) for ca in group}
        for ca in cas:
            signer = (
                ocsp.current_signer(ca.id) if self.settings.ocsp_signer == "delegated" else None
            )
            responders.append(
                {
                    "ca_id": ca.id,
                    "ca_refid": ca.refid,
                    "ca_name": ca.name,
                    "served": ca.id in served,
                    "signer": _signer_view(signer, now) if signer else None,
                }
            )
        return {
            "enabled": True,
            "url": self.url,
            "signer_mode": self.settings.ocsp_signer,
            "response_validity_seconds": self.settings.ocsp_validity_seconds,
            "signer_validity_days": self.settings.ocsp_signer_days,
            "max_request_bytes": self.settings.ocsp_max_request_bytes,
            "cached_responses": self.responder.cached_responses(),
            "responders": responders,
        }

    def stats(self) -> dict[str, Any]:
        counts = OCSPRepository(self.repos.session).counts()
        # Add what this process counted since its last flush, so a fresh request shows.
        for name, value in self.responder.counts.items():
            counts[name] = counts.get(name, 0) + value
        hits, signed = counts.get("cache_hits", 0), counts.get("signed", 0)
        total = counts.get("requests", 0)
        return {
            "total_requests": total,
            "get_requests": counts.get("get", 0),
            "post_requests": counts.get("post", 0),
            "nonce_requests": counts.get("nonce", 0),
            "good": counts.get("good", 0),
            "revoked": counts.get("revoked", 0),
            "unknown": counts.get("unknown", 0),
            "malformed": counts.get("malformed", 0),
            "unauthorized": counts.get("unauthorized", 0),
            "internal_errors": counts.get("internal_error", 0),
            "too_large": counts.get("too_large", 0),
            "cache_hits": hits,
            "responses_signed": signed,
            "cache_hit_rate": round(hits / total, 4) if total else 0.0,
            "cached_responses": self.responder.cached_responses(),
        }


def _signer_view(found: Any, now: datetime) -> dict[str, Any]:
    row, cert = found
    return {
        "certificate_id": cert.id,
        "serial_number": cert.serial_number,
        "subject": cert.subject,
        "generation": row.generation,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "status": cert.status,
        "valid": cert.status == "active" and cert.not_after > now,
    }
