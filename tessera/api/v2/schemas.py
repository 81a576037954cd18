"""Wire types of the native API, field for field as the UCM seed writes them."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)


def _not_a_boolean(value: object) -> object:
    """Pydantic reads JSON true and false as the integers 1 and 0, so {"ids": [true]} acted on
    row 1 and "validity_days": true meant one day. A number may still come as text ("42")."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    return value


# After any bounds, so that they stay minimum/maximum in the OpenAPI document (placed after
# a validator, pydantic writes them as its own non-standard ge/le).
NO_BOOL = BeforeValidator(_not_a_boolean)
Integer = Annotated[int, NO_BOOL]
# Row ids are INTEGER columns: a larger number cannot name a row, and the drivers fail on it.
RowId = Annotated[int, Field(ge=1, le=2**31 - 1), NO_BOOL]
Days = Annotated[int, Field(ge=1, le=36500), NO_BOOL]  # a validity, MAX_VALIDITY_DAYS
Port = Annotated[int, Field(ge=1, le=65535), NO_BOOL]


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """PostgreSQL text cannot hold NUL, and no name, password or PEM needs one."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("must not contain NUL characters")
        return value


def _key_type_name(value: str) -> str:
    name = value.strip().upper()
    return "EC" if name == "ECDSA" else name


class KeyTypeAlias(Strict):
    """`key_type`, the templates' word, as an alias of `key_algorithm`: a client that sent
    {"key_type": "EC"} was silently given an RSA key. Both, naming different types, is a 422."""

    key_algorithm: str | None = Field(None, description="RSA, EC or Ed25519")
    key_type: str | None = Field(None, description="alias of key_algorithm")

    @model_validator(mode="after")
    def _one_key_type(self) -> "KeyTypeAlias":
        if self.key_type is None:
            return self
        if self.key_algorithm is None:
            self.key_algorithm = self.key_type
        elif _key_type_name(self.key_algorithm) != _key_type_name(self.key_type):
            raise ValueError("key_type and key_algorithm name different key types; send one")
        return self


class SubjectIn(Strict):
    common_name: str = Field(min_length=1, max_length=64)
    organization: str | None = Field(None, max_length=64)
    organizational_unit: str | None = Field(None, max_length=64)
    country: str | None = Field(None, min_length=2, max_length=2)
    state: str | None = Field(None, max_length=128)
    locality: str | None = Field(None, max_length=128)
    email: str | None = Field(None, max_length=128)


class CreateCA(SubjectIn, KeyTypeAlias):
    name: str | None = Field(None, max_length=200)
    key_size: Integer | None = None
    validity_days: Days | None = None
    ca_type: Literal["root", "intermediate"] = "root"
    parent_id: RowId | None = None
    path_length: Annotated[int, Field(ge=0, le=10), NO_BOOL] | None = None
    # Not in the seed's example: a CA template (basic_constraints.ca) applied as for a leaf.
    template_id: RowId | None = None


class UpdateCA(Strict):
    name: str | None = Field(None, max_length=200)
    is_active: bool | None = None


class IdList(Strict):
    ids: list[RowId] = Field(min_length=1, max_length=1000)


class IssueCertificate(KeyTypeAlias):
    common_name: str | None = Field(None, min_length=1, max_length=64)
    ca_id: RowId
    template_id: RowId | None = None
    validity_days: Days | None = None
    key_size: Integer | None = None
    san: list[str] = Field(default_factory=list, max_length=100)
    key_usage: list[str] | None = None
    extended_key_usage: list[str] | None = None
    organization: str | None = Field(None, max_length=64)
    organizational_unit: str | None = Field(None, max_length=64)
    country: str | None = Field(None, min_length=2, max_length=2)
    state: str | None = Field(None, max_length=128)
    locality: str | None = Field(None, max_length=128)
    email: str | None = Field(None, max_length=128)
    csr: str | None = Field(None, description="PEM CSR; its key is used instead of a new one")


class Renew(Strict):
    validity_days: Days | None = None
    # Not in the seed's example, but bulk renew's: the CA to renew under (needed for an
    # imported certificate, which has none here), else the one that issued it.
    ca_id: RowId | None = None


class Revoke(Strict):
    reason: str | None = "unspecified"
    comments: str | None = Field(None, max_length=1000)
    # RFC 5280 5.3.2, ISO 8601 (UTC when it names no zone); not in the future
    invalidity_date: datetime | None = None


class RevokeCA(Strict):
    reason: str | None = "unspecified"


class BulkRevoke(IdList):
    reason: str | None = "unspecified"


class BulkRenew(IdList):
    ca_id: RowId | None = None


class KeyRequest(Strict):
    passphrase: str | None = None


class ImportCAJson(Strict):
    certificate: str
    private_key: str | None = None
    password: str | None = None
    name: str | None = None


class Login(Strict):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


class AuthMethodsQuery(Strict):
    username: str | None = None


class CreateApiKey(Strict):
    name: str = Field(min_length=1, max_length=200)
    expires_days: Integer | None = None
    permissions: list[str] | None = None


class UpdateApiKey(Strict):
    name: str | None = Field(None, max_length=200)
    enabled: bool | None = None


class CreateUser(Strict):
    username: str = Field(min_length=1, max_length=150)
    email: str | None = Field(None, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    role: str = "viewer"
    full_name: str | None = Field(None, max_length=200)


class UpdateUser(Strict):
    email: str | None = Field(None, max_length=254)
    role: str | None = None
    full_name: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=1024)
    active: bool | None = None


# Certificate signing requests. A CSR in PEM is a few kilobytes; 64 KiB leaves room to spare.
MAX_CSR_TEXT = 65536


class UploadCSR(Strict):
    csr: str = Field(min_length=1, max_length=MAX_CSR_TEXT)
    name: str | None = Field(None, max_length=200)
    private_key: str | None = Field(None, max_length=MAX_CSR_TEXT, description="PEM; blank: none")
    password: str | None = Field(None, max_length=1024, description="opens private_key")


class SignCSR(Strict):
    ca_id: RowId
    validity_days: Days | None = None
    template_id: RowId | None = None


class BulkSignCSRs(IdList):
    ca_id: RowId
    validity_days: Days | None = None
    template_id: RowId | None = None


class AttachCSRKey(Strict):
    key: str = Field(min_length=1, max_length=MAX_CSR_TEXT)
    passphrase: str | None = Field(None, max_length=1024)


# Template fields are strict: lax parsing would take {"ca": "yes"} for a CA template.
class TemplateConstraints(Strict):
    ca: StrictBool | None = None
    path_length: StrictInt | None = Field(None, ge=0, le=10)


class TemplateBody(Strict):
    """Templates as the seed writes them; the service checks the vocabularies and the key."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=4000)
    template_type: str | None = Field(None, max_length=32)
    validity_days: StrictInt | None = Field(None, ge=1, le=36500)
    key_type: str | None = Field(None, max_length=16, description="RSA, EC or Ed25519")
    key_algorithm: str | None = Field(None, max_length=16, description="alias of key_type")
    # No range here: the core answers every key size alike, whichever path asks (keys.py).
    key_size: StrictInt | None = None
    key_usage: list[str] | None = Field(None, max_length=16)
    extended_key_usage: list[str] | None = Field(None, max_length=16)
    basic_constraints: TemplateConstraints | None = None
    is_ca: StrictBool | None = None
    path_length: StrictInt | None = Field(None, ge=0, le=10)
    subject_defaults: dict[str, str | None] | None = None
    organization: str | None = Field(None, max_length=64)
    organizational_unit: str | None = Field(None, max_length=64)
    country: str | None = Field(None, min_length=2, max_length=2)
    state: str | None = Field(None, max_length=128)
    locality: str | None = Field(None, max_length=128)


class CreateTemplate(TemplateBody):
    name: str = Field(min_length=1, max_length=200)


class AddTrustedCertificate(Strict):
    certificate: str = Field(min_length=1, max_length=1_000_000)
    password: str | None = Field(None, max_length=1024)  # opens a PKCS#12 file
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=4000)
    purpose: str | None = Field(None, max_length=64)
    notes: str | None = Field(None, max_length=4000)


# Certificates (bulk export), smart import and the certificate tools. Pasted content may be a
# PEM bundle or base64 of a binary file, so it may be larger than the upload limit (5 MiB).
MAX_PASTE = 8 * 1024 * 1024


class BulkExport(IdList):
    format: str = Field("pem", max_length=16)


class SmartImportOptions(Strict):
    import_cas: bool = True
    import_certificates: bool = True
    import_certs: bool | None = None  # UCM's spelling of import_certificates
    import_keys: bool = True
    import_csrs: bool = True


class SmartImport(Strict):
    content: str = Field(min_length=1, max_length=MAX_PASTE)
    password: str | None = Field(None, max_length=1024)
    options: SmartImportOptions | None = None


class OpnsenseConnection(Strict):
    host: str = Field(min_length=1, max_length=270, description="name or address (https://...)")
    port: Port = 443
    api_key: str = Field(min_length=1, max_length=512)
    api_secret: str = Field(min_length=1, max_length=512)
    verify_ssl: StrictBool = Field(True, description="false: accept a self-signed GUI certificate")


class OpnsenseImport(OpnsenseConnection):
    import_cas: StrictBool = True
    import_certificates: StrictBool = True
    import_keys: StrictBool = True
    items: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=500)


class CheckSSL(Strict):
    hostname: str = Field(min_length=1, max_length=255)
    port: Port = 443


class DecodePem(Strict):
    pem: str | None = Field(None, max_length=MAX_PASTE, description="PEM, or base64 of DER")
    content: str | None = Field(None, max_length=MAX_PASTE, description="the same as pem")


class MatchKeys(Strict):
    certificate: str | None = Field(None, max_length=MAX_PASTE)
    private_key: str | None = Field(None, max_length=MAX_PASTE)
    csr: str | None = Field(None, max_length=MAX_PASTE)
    password: str | None = Field(None, max_length=1024)


class ConvertFormat(Strict):
    pem: str | None = Field(None, max_length=MAX_PASTE, description="PEM, or base64 of a file")
    content: str | None = Field(None, max_length=MAX_PASTE, description="the same as pem")
    input_type: str = Field("auto", max_length=16)
    output_format: str = Field("pem", max_length=16)
    password: str | None = Field(None, max_length=1024)
    pkcs12_password: str | None = Field(None, max_length=1024)
    chain: str | None = Field(None, max_length=MAX_PASTE)
    private_key: str | None = Field(None, max_length=MAX_PASTE)
