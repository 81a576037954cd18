"""Certificate download (RFC 8555 7.4.2): "The default format of the certificate is
application/pem-certificate-chain". A client may ask for another by its Accept header; the
two formats the ACME drafts and RFC 2585 / RFC 8551 name for certificates are offered too:
application/pkix-cert (the end-entity certificate alone, in DER) and application/pkcs7-mime
(a certs-only PKCS#7 of the chain). An Accept that none of them meets gets the default, as
RFC 9110 12.5.1 lets a server disregard the field rather than answer 406: clients that send
one Accept for every request (application/json, say) must still get their certificate."""

from cryptography import x509

from tessera.core.formats import cert_der, cert_pem, pkcs7_bundle

PEM_CHAIN = "application/pem-certificate-chain"
PKIX_CERT = "application/pkix-cert"
PKCS7 = "application/pkcs7-mime"
OFFERED = (PEM_CHAIN, PKIX_CERT, PKCS7)  # the server's preference on equal quality
CONTENT_TYPES = {PKCS7: f"{PKCS7}; smime-type=certs-only"}


def negotiate(accept: str | None) -> str:
    """The offered type the Accept header gives the highest quality (RFC 9110 12.5.1: each
    type takes the quality of the most specific range that matches it), else the default."""
    ranges = _ranges(accept or "")
    best, best_q = PEM_CHAIN, 0.0
    for offered in OFFERED:
        q = _quality(offered, ranges)
        if q > best_q:
            best, best_q = offered, q
    return best


def representation(
    media: str, leaf: x509.Certificate, chain: list[x509.Certificate]
) -> tuple[bytes, str]:
    """The body and Content-Type of the leaf with its issuers (nearest first) in `media`."""
    if media == PKIX_CERT:
        return cert_der(leaf), PKIX_CERT
    if media == PKCS7:
        return pkcs7_bundle([leaf, *chain], der=True), CONTENT_TYPES[PKCS7]
    return "".join(cert_pem(c) for c in [leaf, *chain]).encode("ascii"), PEM_CHAIN


def _ranges(accept: str) -> list[tuple[str, float]]:
    """(media range, quality) of each element of the header; unreadable qualities count as
    1, as a missing one does."""
    found = []
    for element in accept.split(","):
        media, *params = (part.strip() for part in element.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 1.0
        found.append((media.lower(), q))
    return found


def _quality(offered: str, ranges: list[tuple[str, float]]) -> float:
    kind = offered.split("/")[0]
    for candidate in (offered, f"{kind}/*", "*/*"):  # most specific first
        qualities = [q for media, q in ranges if media == candidate]
        if qualities:
            return max(qualities)
    return 0.0
