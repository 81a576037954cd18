"""The CMS (PKCS#7) that SCEP needs, parsed and built with asn1crypto, with the cryptography
done by `cryptography`: SignedData (verify, sign), EnvelopedData with RSA key transport
(decrypt, encrypt) and degenerate certificates-only SignedData. Password-based envelopes
(PasswordRecipientInfo) are in `pwri.py`.

Errors carry the SCEP failInfo they deserve, so the protocol layer can answer a CertRep.
"""

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

from tessera.core.inspect import key_identifiers
from tessera.domains.scep.csr import ASN1_ERRORS as CSR_ERRORS
from tessera.domains.scep.types import BAD_ALG, BAD_CERT_ID, BAD_MESSAGE_CHECK

# What the CSR reader catches (asn1crypto's built-in errors, cryptography's
# UnsupportedAlgorithm), and for a certificate in the SignedData cryptography's own refusals
# that are no ValueError: an unknown version, a malformed extension.
ASN1_ERRORS = (
    *CSR_ERRORS,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# Content-encryption algorithms we accept: (asn1crypto name, key bytes). Single DES is not
# among them: RFC 8894 section 3.5.2 deprecates it and its 56-bit key is broken.
_DER = Encoding.DER
CIPHERS = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32, "tripledes_3key": 24}
# Single DES only on the way in, and only when allowed: some clients (micromdm's scepclient
# among them) encrypt requests with nothing else. Answers never use it.
LEGACY_DES, DES_KEY = "des", 8
# PKCS#1 v1.5 key transport pads the content key with at least 11 bytes: a smaller modulus
# cannot carry the largest content key, and encrypting to it would fail after the issuance.
_MIN_RECIPIENT_BITS = 8 * (max(CIPHERS.values()) + 11)
_CONTEXT, _PRIMITIVE = 2, 0  # BER class and method numbers
_CONTENT_TYPE, _MESSAGE_DIGEST = "1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"  # RFC 5652 11


class CmsError(Exception):
    """A message we could parse enough to answer, but must refuse with `fail_info`."""

    def __init__(self, fail_info: str, message: str) -> None:
        super().__init__(message)
        self.fail_info = fail_info
        self.message = message


class NotCms(Exception):
    """Not a PKCS#7 message at all: the HTTP layer answers 400."""


@dataclass(frozen=True)
class SignedMessage:
    """A parsed SignedData with exactly one signer."""

    content: bytes | None
    signer_info: cms.SignerInfo
    certificates: list[x509.Certificate]
    digest_algorithm: str
    content_type: str  # the eContentType, dotted

    def attribute(self, oid: str) -> core.Asn1Value | None:
        """The single value of a signed attribute: typed for the attributes asn1crypto
        knows (contentType, messageDigest...), `core.Any` for the SCEP ones."""
        for attr in self.signer_info["signed_attrs"]:
            if attr["type"].dotted == oid:
                values = attr["values"]
                return values[0] if len(values) == 1 else None
        return None

    def instances(self, oid: str) -> int:
        return sum(1 for attr in self.signer_info["signed_attrs"] if attr["type"].dotted == oid)


def parsed_value(value: core.Asn1Value, spec: type[core.Asn1Value]) -> object:
    """The native value of an attribute, read as `spec` when asn1crypto left it untyped."""
    if isinstance(value, core.Any):
        return value.parse(spec).native
    return value.native


def load_signed(der: bytes) -> SignedMessage:
    """Parse a ContentInfo(SignedData) whose one SignerInfo has signed attributes."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise NotCms("the message is not a PKCS#7 SignedData")
        signed = info["content"]
        signer_infos = signed["signer_infos"]
        encap = signed["encap_content_info"]
        content = encap["content"].native if encap["content"] else None
        content_type = encap["content_type"].dotted
        certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]
        if len(signer_infos) != 1:
            raise NotCms("a SCEP message has exactly one signer")
        signer_info = signer_infos[0]
        digest = signer_info["digest_algorithm"]["algorithm"].native
        if not signer_info["signed_attrs"]:
            raise NotCms("the signer has no signed attributes")
        for attr in signer_info["signed_attrs"]:  # parse them all now, not later
            attr["type"].dotted  # noqa: B018
            len(attr["values"])
    except NotCms:
        raise
    except ASN1_ERRORS as exc:
        raise NotCms(f"not a valid PKCS#7 message: {exc}") from exc
    if not isinstance(content, bytes | None):
        raise NotCms("the signed content is not an octet string")
    return SignedMessage(content, signer_info, certs, str(digest), content_type)


def signer_certificate(message: SignedMessage) -> x509.Certificate:
    """The certificate the SignerInfo names (issuer and serial, or key identifier)."""
    sid = message.signer_info["sid"]
    try:
        if sid.name == "issuer_and_serial_number":
            issuer = sid.chosen["issuer"].dump()
            serial = sid.chosen["serial_number"].native
            for cert in message.certificates:
                if cert.serial_number == serial and cert.issuer.public_bytes() == issuer:
                    return cert
        else:
            key_id = sid.chosen.native
            for cert in message.certificates:
                if key_id in key_identifiers(cert):
                    return cert
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, f"unreadable signer identifier: {exc}") from exc
    raise CmsError(BAD_CERT_ID, "the message does not carry its signer's certificate")


def verify(message: SignedMessage, signer: x509.Certificate) -> None:
    """Check the contentType attribute against the eContentType, messageDigest against the
    content and the signature over the signed attributes (RFC 5652 5.6). signingTime, when
    present, is signed but not used (docs/scep.md)."""
    hash_cls = HASHES.get(message.digest_algorithm)
    if hash_cls is None:
        raise CmsError(BAD_ALG, f"unsupported digest algorithm {message.digest_algorithm}")
    _check_content_type(message)
    digest = hashes.Hash(hash_cls())
    digest.update(message.content or b"")
    try:
        _check_single(message, _MESSAGE_DIGEST, "messageDigest")
        expected = message.attribute(_MESSAGE_DIGEST)
        claimed = parsed_value(expected, core.OctetString) if expected is not None else None
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, "unreadable messageDigest attribute") from exc
    if claimed != digest.finalize():
        raise CmsError(BAD_MESSAGE_CHECK, "the messageDigest does not match the content")
    # The signature covers the DER of the attributes as a SET (RFC 5652 section 5.4).
    attrs = message.signer_info["signed_attrs"].dump()
    _verify_signature(message.signer_info, signer, b"\x31" + attrs[1:], hash_cls())


def _check_content_type(message: SignedMessage) -> None:
    """RFC 5652 5.3: with signed attributes (which SCEP always has, RFC 8894 3.2), the
    content-type attribute MUST be one of them, "with a value equal to the eContentType":
    it is what binds the signature to the kind of content, which the messageDigest alone
    does not. A message without it, or naming another type, is malformed: badMessageCheck,
    as a signature that does not verify."""
    try:
        _check_single(message, _CONTENT_TYPE, "contentType")
        claimed = message.attribute(_CONTENT_TYPE)
        if claimed is not None and not isinstance(claimed, core.ObjectIdentifier):
            claimed = claimed.parse(core.ObjectIdentifier)
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, "unreadable contentType attribute") from exc
    if claimed is None:
        raise CmsError(BAD_MESSAGE_CHECK, "the signed attributes lack the contentType")
    if claimed.dotted != message.content_type:
        raise CmsError(
            BAD_MESSAGE_CHECK, "the contentType attribute differs from the encapsulated content"
        )


def _check_single(message: SignedMessage, oid: str, name: str) -> None:
    """RFC 5652 11.1 and 11.2: the content-type and message-digest attributes appear once,
    with a single value; a second one would be a value the check above never saw."""
    found = message.instances(oid)
    if found > 1:
        raise CmsError(BAD_MESSAGE_CHECK, f"the signed attributes carry {name} {found} times")
    if found == 1 and message.attribute(oid) is None:
        raise CmsError(BAD_MESSAGE_CHECK, f"the {name} attribute must have exactly one value")


def _verify_signature(
    signer_info: cms.SignerInfo, cert: x509.Certificate, data: bytes, hash_alg: hashes.HashAlgorithm
) -> None:
    try:
        signature = signer_info["signature"].native
        key = cert.public_key()
        algo = signer_info["signature_algorithm"].signature_algo
        if isinstance(key, rsa.RSAPublicKey) and algo == "rsassa_pkcs1v15":
            key.verify(signature, data, asym_padding.PKCS1v15(), hash_alg)
        elif isinstance(key, rsa.RSAPublicKey) and algo == "rsassa_pss":
            params = signer_info["signature_algorithm"]["parameters"]
            pss_hash = HASHES[params["hash_algorithm"]["algorithm"].native]()
            mgf = asym_padding.MGF1(pss_hash)
            pss = asym_padding.PSS(mgf, params["salt_length"].native)
            key.verify(signature, data, pss, pss_hash)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo == "ecdsa":
            key.verify(signature, data, ec.ECDSA(hash_alg))
        else:
            raise CmsError(BAD_ALG, f"unsupported signature algorithm {algo}")
    except InvalidSignature as exc:
        raise CmsError(BAD_MESSAGE_CHECK, "the signature does not verify") from exc
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, f"unreadable signature algorithm: {exc}") from exc


@dataclass(frozen=True)
class Decrypted:
    content: bytes
    cipher: str  # the content-encryption algorithm, reused for the answer


@dataclass(frozen=True)
class SealedContent:
    """An EnvelopedData's encrypted content, read before its content key is recovered: the
    cipher is checked first, so an unsupported one is badAlg whatever the recipient."""

    cipher: str
    key_size: int
    algorithm: algos.EncryptionAlgorithm
    ciphertext: bytes

    def open(self, content_key: bytes) -> Decrypted:
        if len(content_key) != self.key_size:
            raise CmsError(BAD_MESSAGE_CHECK, "the envelope cannot be opened with our key")
        try:
            iv = self.algorithm.encryption_iv
        except ASN1_ERRORS as exc:
            raise CmsError(BAD_ALG, "the content-encryption algorithm has no usable IV") from exc
        plain = _decrypt(self.cipher, content_key, iv, self.ciphertext)
        return Decrypted(plain, self.cipher)


def cipher_key_size(name: str, allow_des: bool) -> int | None:
    """The key size of a CBC cipher we accept, None for one we refuse."""
    return DES_KEY if name == LEGACY_DES and allow_des else CIPHERS.get(name)


def load_enveloped(der: bytes) -> cms.EnvelopedData:
    """The EnvelopedData a pkcsPKIEnvelope carries."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "enveloped_data":
            raise CmsError(BAD_MESSAGE_CHECK, "the signed content is not an EnvelopedData")
        enveloped: cms.EnvelopedData = info["content"]
    except CmsError:
        raise
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, f"unreadable EnvelopedData: {exc}") from exc
    return enveloped


def sealed_content(enveloped: cms.EnvelopedData, allow_des: bool) -> SealedContent:
    try:
        content_info = enveloped["encrypted_content_info"]
        algorithm = content_info["content_encryption_algorithm"]
        cipher_name = algorithm["algorithm"].native
        ciphertext = _encrypted_content(content_info)
    except CmsError:
        raise
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, f"unreadable EnvelopedData: {exc}") from exc
    key_size = cipher_key_size(cipher_name, allow_des)
    if key_size is None and cipher_name == LEGACY_DES:
        # A newcomer's scepclient sends nothing else: name the way out (it reaches the
        # client as failInfoText and the log).
        raise CmsError(
            BAD_ALG, "single DES is refused (RFC 8894 2.9) unless TESSERA_SCEP_ALLOW_DES is set"
        )
    if key_size is None:
        raise CmsError(BAD_ALG, f"unsupported content-encryption algorithm {cipher_name}")
    if not isinstance(ciphertext, bytes):
        raise CmsError(BAD_MESSAGE_CHECK, "the envelope cannot be opened with our key")
    return SealedContent(cipher_name, key_size, algorithm, ciphertext)


def decrypt_enveloped(
    der: bytes, recipient: x509.Certificate, key: rsa.RSAPrivateKey, allow_des: bool = False
) -> Decrypted:
    """Open an EnvelopedData addressed to `recipient` with RSA key transport."""
    enveloped = load_enveloped(der)
    try:
        recipient_info = _our_recipient(enveloped["recipient_infos"], recipient)
        encrypted_key = recipient_info["encrypted_key"].native
        key_algo = recipient_info["key_encryption_algorithm"]
    except CmsError:
        raise
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, f"unreadable EnvelopedData: {exc}") from exc
    sealed = sealed_content(enveloped, allow_des)
    return sealed.open(_unwrap_key(key_algo, encrypted_key, key))


def _encrypted_content(content_info: cms.EncryptedContentInfo) -> bytes:
    """The ciphertext, primitive (DER) or, as Go's pkcs7 writes it, a constructed [0] of
    OCTET STRING chunks (BER), which asn1crypto's typed field refuses."""
    try:
        value = content_info["encrypted_content"].native
        if isinstance(value, bytes):
            return value
    except ValueError:
        pass
    for cls, method, tag, body in _children(content_info.contents):
        if cls == _CONTEXT and tag == 0:
            if method == _PRIMITIVE:
                return body
            return b"".join(chunk for _, _, _, chunk in _children(body))
    raise CmsError(BAD_MESSAGE_CHECK, "the envelope has no encrypted content")


def _children(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The (class, method, tag, contents) of each BER element in `data`, in order."""
    found = []
    while data and data != b"\0\0":  # an indefinite length ends with two zero octets
        cls, method, tag, header, body, trailer = parser.parse(data)
        found.append((cls, method, tag, body))
        data = data[len(header) + len(body) + len(trailer) :]
    return found


def recipients(der: bytes) -> list[tuple[bytes, int]]:
    """The (issuer DER, serial) each key-transport recipient of an EnvelopedData names: which
    of our certificates the client encrypted to."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "enveloped_data":
            return []
        return [
            (rid.chosen["issuer"].dump(), int(rid.chosen["serial_number"].native))
            for choice in info["content"]["recipient_infos"]
            if choice.name == "ktri"
            and (rid := choice.chosen["rid"]).name == "issuer_and_serial_number"
        ]
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_MESSAGE_CHECK, f"unreadable EnvelopedData: {exc}") from exc


def _our_recipient(
    recipient_infos: cms.RecipientInfos, cert: x509.Certificate
) -> cms.KeyTransRecipientInfo:
    for choice in recipient_infos:
        if choice.name != "ktri":
            continue
        rid = choice.chosen["rid"]
        if rid.name == "issuer_and_serial_number":
            match = (
                rid.chosen["serial_number"].native == cert.serial_number
                and rid.chosen["issuer"].dump() == cert.issuer.public_bytes()
            )
        else:
            match = rid.chosen.native in key_identifiers(cert)
        if match:
            return choice.chosen
    raise CmsError(BAD_MESSAGE_CHECK, "the envelope is not addressed to this server")


def _unwrap_key(
    algorithm: cms.KeyEncryptionAlgorithm, encrypted: bytes, key: rsa.RSAPrivateKey
) -> bytes:
    name = algorithm["algorithm"].native
    try:
        if name == "rsaes_pkcs1v15":
            return key.decrypt(encrypted, asym_padding.PKCS1v15())
        if name == "rsaes_oaep":
            params = algorithm["parameters"]
            oaep_hash = HASHES[params["hash_algorithm"]["algorithm"].native]()
            mgf = asym_padding.MGF1(
                HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]()
            )
            return key.decrypt(encrypted, asym_padding.OAEP(mgf, oaep_hash, None))
    except ValueError as exc:
        raise CmsError(BAD_MESSAGE_CHECK, "the content key cannot be decrypted") from exc
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, f"unreadable key-transport parameters: {exc}") from exc
    raise CmsError(BAD_ALG, f"unsupported key-transport algorithm {name}")


def block_cipher(name: str, key: bytes) -> algorithms.AES | TripleDES:
    if name == LEGACY_DES:
        return TripleDES(key * 3)  # EDE with one key three times is single DES
    return TripleDES(key) if name == "tripledes_3key" else algorithms.AES(key)


def _decrypt(name: str, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    block = block_cipher(name, key)
    if len(iv) * 8 != block.block_size or len(ciphertext) % len(iv):
        raise CmsError(BAD_MESSAGE_CHECK, "the encrypted content is truncated")
    decryptor = Cipher(block, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(block.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CmsError(BAD_MESSAGE_CHECK, "the envelope cannot be opened with our key") from exc


# Building. Every structure is written by asn1crypto from fields that are already DER (the
# `contents=` argument), in field order, so nothing is parsed, deep-copied or re-serialised on
# the way: built from dicts of parsed certificates, a CertRep cost four times its signature.
_V0, _V1 = core.Integer(0).dump(), core.Integer(1).dump()
_DATA = cms.ContentType("data").dump()
_SIGNED_DATA = cms.ContentType("signed_data").dump()
_ENVELOPED_DATA = cms.ContentType("enveloped_data").dump()
_CONTENT_TYPE_DATA = cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()
# rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters: what asn1crypto writes for
# "rsassa_pkcs1v15", the form every SCEP client reads (strongSwan accepts no other).
_RSA_SIGNATURE = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump()
_RSA_KEY_TRANSPORT = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}).dump()
_DIGEST_IDS = {name: algos.DigestAlgorithm({"algorithm": name}).dump() for name in HASHES}
_CIPHER_IDS = {name: algos.EncryptionAlgorithmId(name).dump() for name in CIPHERS}


def _der(cls: type[core.Asn1Value], *fields: bytes, **tagging: int) -> bytes:
    """The DER of a SEQUENCE type from its fields' DER; absent optional fields are left out."""
    return cls(contents=b"".join(fields), **tagging).dump()


def _der_set(cls: type[core.SetOf], members: Iterable[bytes], **tagging: int) -> bytes:
    """The DER of a SET OF: members sorted by their encodings (X.690 11.6), as asn1crypto's
    SetOf orders them."""
    return cls(contents=b"".join(sorted(members)), **tagging).dump()


@functools.lru_cache(maxsize=64)
def _oid(dotted: str) -> bytes:
    return cms.CMSAttributeType(dotted).dump()


def attribute(oid: str, value: core.Asn1Value) -> cms.CMSAttribute:
    """A signed attribute with a single value, made from the value's DER as it stands (a
    transactionID is echoed byte for byte)."""
    return cms.CMSAttribute(contents=_oid(oid) + _der_set(cms.SetOfAny, [value.dump()]))


@functools.lru_cache(maxsize=256)
def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber with the issuer Name and serial exactly as the certificate encodes
    them. Cached: the responder signs every answer, and even asn1crypto's lazy parse of a
    TBSCertificate's fields costs a tenth of the signature."""
    tbs = asn1_x509.Certificate.load(cert.public_bytes(_DER))["tbs_certificate"]
    return _der(cms.IssuerAndSerialNumber, tbs["issuer"].dump(), tbs["serial_number"].dump())


def recipient_key(recipient: x509.Certificate) -> rsa.RSAPublicKey:
    """The key an answer to `recipient` is encrypted to: RSA (key transport is all SCEP
    clients read), large enough for PKCS#1 v1.5 to carry the content key. Checked when a
    request arrives, so a request we could not answer is refused before it is acted on."""
    try:
        key = recipient.public_key()
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, "the requester's certificate cannot be encrypted to") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CmsError(BAD_ALG, "the requester's certificate has no RSA key to encrypt to")
    if key.key_size < _MIN_RECIPIENT_BITS:
        raise CmsError(BAD_ALG, "the requester's RSA key is too small to encrypt to")
    return key


def answer_cipher(request_cipher: str) -> str:
    """The cipher an answer is encrypted with: the request's, but never single DES."""
    if request_cipher == LEGACY_DES:
        return "tripledes_3key"  # what a client limited to DES also reads (RFC 8894)
    return request_cipher if request_cipher in CIPHERS else "aes256_cbc"


def encrypt_enveloped(content: bytes, recipient: x509.Certificate, cipher_name: str) -> bytes:
    """An EnvelopedData of `content` for `recipient` (RSA key transport, PKCS#1 v1.5)."""
    public_key = recipient_key(recipient)
    try:
        recipient_id = _issuer_and_serial(recipient)
    except ASN1_ERRORS as exc:
        raise CmsError(BAD_ALG, "the requester's certificate cannot be encrypted to") from exc
    cipher_name = answer_cipher(cipher_name)
    key = os.urandom(CIPHERS[cipher_name])
    encrypted_key = public_key.encrypt(key, asym_padding.PKCS1v15())
    recipient_info = _der(
        cms.KeyTransRecipientInfo,
        _V0,
        recipient_id,
        _RSA_KEY_TRANSPORT,
        core.OctetString(encrypted_key).dump(),
    )
    enveloped = _der(
        cms.EnvelopedData,
        _V0,
        _der_set(cms.RecipientInfos, [recipient_info]),  # the ktri choice is untagged
        encrypted_content_info(content, cipher_name, key),
        explicit=0,
    )
    return _der(cms.ContentInfo, _ENVELOPED_DATA, enveloped)


def encrypted_content_info(content: bytes, cipher_name: str, key: bytes) -> bytes:
    block = block_cipher(cipher_name, key)
    iv = os.urandom(block.block_size // 8)
    padder = padding.PKCS7(block.block_size).padder()
    encryptor = Cipher(block, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize())
    ciphertext += encryptor.finalize()
    algorithm = _der(
        algos.EncryptionAlgorithm, _CIPHER_IDS[cipher_name], core.OctetString(iv).dump()
    )
    return _der(
        cms.EncryptedContentInfo,
        _DATA,
        algorithm,
        core.OctetString(ciphertext, implicit=0).dump(),
    )


def sign(
    content: bytes,
    attributes: Sequence[cms.CMSAttribute],
    signer: x509.Certificate,
    key: rsa.RSAPrivateKey,
    digest_algorithm: str,
    certificates: list[x509.Certificate],
) -> bytes:
    """A SignedData over `content` (empty, but present, for PENDING and FAILURE) with the
    SCEP attributes, signed with rsaEncryption as the signature algorithm."""
    if digest_algorithm not in HASHES:
        digest_algorithm = "sha256"
    hash_alg = HASHES[digest_algorithm]()
    digest = hashes.Hash(hash_alg)
    digest.update(content)
    message_digest = attribute(_MESSAGE_DIGEST, core.OctetString(digest.finalize()))
    encoded = [_CONTENT_TYPE_DATA, message_digest.dump(), *(a.dump() for a in attributes)]
    signed_attrs = b"".join(sorted(encoded))  # a SET OF, in DER order
    # The signature covers the attributes as a SET (RFC 5652 section 5.4); the SignerInfo
    # carries the same contents under [0] IMPLICIT.
    to_sign = cms.CMSAttributes(contents=signed_attrs).dump()
    signature = key.sign(to_sign, asym_padding.PKCS1v15(), hash_alg)
    signer_info = _der(
        cms.SignerInfo,
        _V1,
        _issuer_and_serial(signer),  # the untagged choice of SignerIdentifier
        _DIGEST_IDS[digest_algorithm],
        cms.CMSAttributes(contents=signed_attrs, implicit=0).dump(),
        _RSA_SIGNATURE,
        core.OctetString(signature).dump(),
    )
    return _signed_data([_DIGEST_IDS[digest_algorithm]], content, certificates, [], [signer_info])


def degenerate(certificates: list[x509.Certificate], crls: list[bytes] | None = None) -> bytes:
    """A certificates-only SignedData (no signers): how SCEP ships certificates and CRLs."""
    return _signed_data([], None, certificates, crls or [], [])


def _signed_data(
    digest_ids: list[bytes],
    content: bytes | None,
    certificates: list[x509.Certificate],
    crls: list[bytes],
    signer_infos: list[bytes],
) -> bytes:
    """ContentInfo(SignedData) from encoded parts; certificates go in as their own DER."""
    encap = [_DATA] if content is None else [_DATA, core.OctetString(content, explicit=0).dump()]
    fields = [
        _V1,
        _der_set(cms.DigestAlgorithms, digest_ids),
        _der(cms.EncapsulatedContentInfo, *encap),
        _der_set(cms.CertificateSet, (c.public_bytes(_DER) for c in certificates), implicit=0),
    ]
    if crls:
        fields.append(_der_set(cms.RevocationInfoChoices, crls, implicit=1))
    fields.append(_der_set(cms.SignerInfos, signer_infos))
    return _der(cms.ContentInfo, _SIGNED_DATA, _der(cms.SignedData, *fields, explicit=0))
