"""OpenSSL's TRUSTED CERTIFICATE PEM form, what `openssl x509 -trustout` writes: a
certificate's DER followed by OpenSSL's own X509_CERT_AUX (crypto/x509/x_x509a.c), which
holds the purposes it is trusted for, those it is rejected for, an alias and a key id.

Only the certificate is kept: Tessera (its trust store included) records no per-purpose
trust, so the trusted purposes, the alias and the key id have nowhere to go. Rejected
purposes are another matter: dropping them would trust the certificate for what its owner
explicitly distrusted, so a certificate that carries any is refused (`openssl x509
-clrreject` removes them).
"""

from asn1crypto import algos, core, parser, pem
from cryptography import x509

from tessera.core.errors import InvalidInput, UnparsableInput
from tessera.core.names import extended_key_usage_names

TRUSTED_LABEL = "TRUSTED CERTIFICATE"


class _Purposes(core.SequenceOf):
    _child_spec = core.ObjectIdentifier


class _Others(core.SequenceOf):
    _child_spec = algos.AlgorithmIdentifier  # OpenSSL's X509_ALGOR


class _CertAux(core.Sequence):
    _fields = [
        ("trust", _Purposes, {"optional": True}),
        ("reject", _Purposes, {"implicit": 0, "optional": True}),
        ("alias", core.UTF8String, {"optional": True}),
        ("keyid", core.OctetString, {"optional": True}),
        ("other", _Others, {"implicit": 1, "optional": True}),
    ]


def certificate_der(block: bytes) -> bytes:
    """The certificate (DER) of one TRUSTED CERTIFICATE PEM block, its trust settings read
    (and refused when they reject a purpose)."""
    try:
        label, _, der = pem.unarmor(block)
        _, _, _, header, contents, trailer = parser.parse(der)
    except (ValueError, TypeError) as exc:
        raise UnparsableInput("not a TRUSTED CERTIFICATE in PEM form") from exc
    if label != TRUSTED_LABEL:
        raise UnparsableInput(f"a {label} block is no TRUSTED CERTIFICATE")
    certificate = header + contents + trailer
    _check_settings(der[len(certificate) :])
    return certificate


def _check_settings(aux: bytes) -> None:
    if not aux:
        return  # `-trustout` without settings may write none
    try:
        settings = _CertAux.load(aux, strict=True)
        settings.native  # noqa: B018 - decodes every field, so garbage is refused here
        rejected = [x509.ObjectIdentifier(oid.dotted) for oid in settings["reject"] or []]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        # asn1crypto raises the latter two for values of an unexpected type inside a field
        raise UnparsableInput("the trust settings after the certificate cannot be read") from exc
    if rejected:
        names = extended_key_usage_names(x509.ExtendedKeyUsage(rejected))
        raise InvalidInput(
            f"OpenSSL's trust settings reject this certificate for {', '.join(names)}; "
            "Tessera keeps no trust settings and would drop that rejection: remove it "
            "(openssl x509 -clrreject) to use the certificate"
        )
