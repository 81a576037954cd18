"""Certificate tools: /api/v2/tools (check-ssl, decode-cert, decode-csr, match-keys,
convert). They read nothing from the inventory and need read:certificates.

Inputs are PEM text, or base64 of a binary file (optionally prefixed "BASE64:"). `convert`
answers in JSON: `data` is PEM text for pem and pkcs7 output and base64 for der, pkcs12 and
pkcs7-der; `content_base64` is always the base64 of the file, with `filename` and
`media_type` to save it under.
"""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from tessera.api.deps import now, require, runtime
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import ok
from tessera.api.v2.schemas import CheckSSL, ConvertFormat, DecodePem, MatchKeys
from tessera.core.errors import InvalidInput
from tessera.core.host_lookup import HostLookup
from tessera.domains.actor import Actor
from tessera.domains.tools.service import Conversion, ProbeSettings, ToolsService

router = PrefixRouter(prefix="/tools", tags=["Certificate Tools"])
Reader = Annotated[Actor, Depends(require("read:certificates"))]


def _service(request: Request) -> ToolsService:
    settings = runtime(request).settings
    probing = ProbeSettings(
        settings.tools_tls_timeout,
        settings.tools_allow_private_targets,
        HostLookup.parse(settings.tools_dns_servers),
    )
    return ToolsService(now(request), probing)


def _text(body: DecodePem | ConvertFormat) -> str:
    text = body.pem or body.content
    if not text:
        raise InvalidInput("pem is required")
    return text


@router.post("/check-ssl")
def check_ssl(request: Request, body: CheckSSL, actor: Reader) -> JSONResponse:
    """A real TLS handshake: the chain presented, protocol and cipher, and whether the system
    trust store and the host name accept it. Private, loopback, link-local and reserved
    targets are refused (403) unless TESSERA_TOOLS_ALLOW_PRIVATE_TARGETS is set."""
    return ok(_service(request).check_ssl(body.hostname, body.port))


@router.post("/decode-cert")
def decode_cert(request: Request, body: DecodePem, actor: Reader) -> JSONResponse:
    return ok(_service(request).decode_certificate(_text(body)))


@router.post("/decode-csr")
def decode_csr(request: Request, body: DecodePem, actor: Reader) -> JSONResponse:
    return ok(_service(request).decode_csr(_text(body)))


@router.post("/match-keys")
def match_keys(request: Request, body: MatchKeys, actor: Reader) -> JSONResponse:
    service = _service(request)
    return ok(service.match_keys(body.certificate, body.private_key, body.csr, body.password))


@router.post("/convert")
def convert(request: Request, body: ConvertFormat, actor: Reader) -> JSONResponse:
    conversion = Conversion(
        content=_text(body),
        output_format=body.output_format.lower(),
        input_type=body.input_type.lower(),
        password=body.password,
        pkcs12_password=body.pkcs12_password,
        chain=body.chain,
        private_key=body.private_key,
    )
    return ok(_service(request).convert(conversion))
