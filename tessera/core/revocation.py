"""Revocation reasons, in every spelling the dialects use (camelCase and snake_case)."""

from cryptography import x509

from tessera.core.errors import InvalidInput

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
_LOOKUP = {name.lower(): name for name in REASONS} | {
    flag.name.replace("_", ""): name for name, flag in REASONS.items()
}


def normalize_reason(reason: str | None) -> str:
    """ "key_compromise", "keyCompromise", "KEY-COMPROMISE" and "caCompromise" all resolve."""
    if not reason:
        return "unspecified"
    key = reason.strip().replace("_", "").replace("-", "").replace(" ", "").lower()
    if key not in _LOOKUP:
        raise InvalidInput(f"unknown revocation reason {reason!r}; known: {', '.join(REASONS)}")
    return _LOOKUP[key]


def reason_flag(reason: str) -> x509.ReasonFlags:
    return REASONS[normalize_reason(reason)]
