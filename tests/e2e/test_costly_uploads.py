"""Uploads that cost the server more than they should, open to a viewer through the tools and
the smart import.

Password-based key derivation: a PKCS#12 file or an encrypted PKCS#8 key says how many PBKDF2
iterations (or what scrypt cost) its password takes, and the server used to pay whatever it
said before finding the password wrong (2^31 iterations: a quarter of an hour of CPU per
request). Such uploads are now refused at once; files made with ordinary settings still open.

Certificate bundles: the body limit lets some 15,000 small certificates through, which
decode-cert read and described for half a minute; at most 500 are read now, as the smart
import already did."""

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asn1crypto import algos, cms, core, keys, pkcs12
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.hazmat.primitives.serialization.pkcs12 import serialize_key_and_certificates

from tests.e2e.accounts_helpers import create_user, key_for
from tests.e2e.helpers import API, cert_of, create_root, data, error, unique
from tests.support import Server, module_server
from tests.tools import openssl

# Some 10 seconds of one core to derive, before the fix; refused unopened after it (the
# refusal names the count, read from the file: nothing was derived).
COSTLY = 25_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Nothing here touches storage: SQLite alone."""
    with module_server("sqlite", tmp_path_factory.mktemp("kdf") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def viewer(server: Server) -> Iterator[httpx.Client]:
    with server.client() as api:
        user = create_user(api, "viewer")
    with server.client(api_key=key_for(server, user["username"])) as client:
        yield client


def pbes2(iterations: int) -> algos.EncryptionAlgorithm:
    kdf_params = algos.Pbkdf2Params(
        {
            "salt": algos.Pbkdf2Salt(name="specified", value=os.urandom(16)),
            "iteration_count": iterations,
            "prf": algos.HmacAlgorithm({"algorithm": "sha256"}),
        }
    )
    cipher = algos.EncryptionAlgorithm(
        {"algorithm": "aes256_cbc", "parameters": core.OctetString(os.urandom(16))}
    )
    kdf = algos.KdfAlgorithm({"algorithm": "pbkdf2", "parameters": kdf_params})
    return algos.EncryptionAlgorithm(
        {
            "algorithm": "pbes2",
            "parameters": algos.Pbes2Params(
                {"key_derivation_func": kdf, "encryption_scheme": cipher}
            ),
        }
    )


def encrypted_key_pem(iterations: int) -> str:
    """An EncryptedPrivateKeyInfo naming `iterations`; what it encrypts does not matter, as
    nothing can tell a wrong password before the key is derived."""
    info = keys.EncryptedPrivateKeyInfo(
        {"encryption_algorithm": pbes2(iterations), "encrypted_data": os.urandom(64)}
    )
    body = base64.encodebytes(info.dump()).decode()
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n"


def pkcs12_without_mac(iterations: int) -> str:
    """A PKCS#12 file with no MAC (so no password is needed to reach its contents) whose one
    encrypted SafeContents names `iterations`; base64, as the JSON bodies carry it."""
    encrypted = cms.EncryptedData(
        {
            "version": "v0",
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": pbes2(iterations),
                "encrypted_content": os.urandom(64),
            },
        }
    )
    safe = pkcs12.AuthenticatedSafe(
        [cms.ContentInfo({"content_type": "encrypted_data", "content": encrypted})]
    )
    pfx = pkcs12.Pfx(
        {
            "version": 3,
            "auth_safe": cms.ContentInfo(
                {"content_type": "data", "content": core.OctetString(safe.dump())}
            ),
        }
    )
    return base64.b64encode(pfx.dump()).decode()


def answered_at_once(client: httpx.Client, path: str, body: dict[str, object]) -> str:
    """The answer's text: a refusal (400), or a report naming the object that could not be
    opened (analyze, match-keys)."""
    response = client.post(path, json=body, timeout=120)
    assert response.status_code in (200, 400), response.text
    return response.text


def test_a_costly_encrypted_key_is_refused_before_it_is_derived(viewer: httpx.Client) -> None:
    key = encrypted_key_pem(COSTLY)
    refused = f"asks for {COSTLY} key derivation iterations"
    convert = {"content": key, "password": "guess", "output_format": "pem"}
    assert refused in error(viewer.post(f"{API}/tools/convert", json=convert, timeout=120), 400)
    for path, body in (
        (f"{API}/import/analyze", {"content": key, "password": "guess"}),
        (f"{API}/tools/match-keys", {"private_key": key, "csr": key, "password": "guess"}),
    ):
        assert refused in answered_at_once(viewer, path, body)


def test_a_costly_pkcs12_is_refused_before_it_is_opened(viewer: httpx.Client) -> None:
    content = pkcs12_without_mac(COSTLY)
    for path, body in (
        (f"{API}/import/analyze", {"content": content}),
        (f"{API}/tools/convert", {"content": content, "output_format": "pem"}),
    ):
        assert f"asks for {COSTLY} key derivation iterations" in answered_at_once(
            viewer, path, body
        )


def test_keys_of_one_bundle_count_together(viewer: httpx.Client) -> None:
    """Each under the limit, ten of them in one paste over it: one password opens them all."""
    each = 1_000_000
    bundle = "".join(encrypted_key_pem(each) for _ in range(10))
    body = {"content": bundle, "password": "guess"}
    message = error(viewer.post(f"{API}/import/analyze", json=body), 400)
    assert f"asks for {10 * each} key derivation iterations" in message


def test_keys_made_with_ordinary_settings_still_open(viewer: httpx.Client, workdir: Path) -> None:
    """OWASP's 600,000 PBKDF2-HMAC-SHA256 iterations and scrypt's usual cost are accepted."""
    plain = workdir / "key.pem"
    made = openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    plain.write_bytes(made.stdout)
    for how in (["-iter", "600000"], ["-scrypt"]):
        done = openssl("pkcs8", "-topk8", "-in", str(plain), "-passout", "pass:pw", *how)
        assert done.returncode == 0, done.stderr
        body = {"content": done.stdout.decode(), "password": "pw"}
        analyzed = data(viewer.post(f"{API}/import/analyze", json=body))
        assert analyzed["objects"][0]["type"] == "private_key", analyzed
        assert "error" not in analyzed["objects"][0], analyzed


def test_a_bundle_of_too_many_certificates_is_refused(server: Server, viewer: httpx.Client) -> None:
    with server.client() as api:
        root = create_root(api, unique("Bundle Root"))
        pem = str(data(api.get(f"{API}/cas/{root['id']}"))["pem"])
    many = [cert_of(pem)] * 2000
    p7 = pkcs7.serialize_certificates(many, serialization.Encoding.DER)
    for content in (pem * len(many), base64.b64encode(p7).decode()):
        answer = viewer.post(f"{API}/tools/decode-cert", json={"pem": content})
        refused = f"at most 500 objects are read at once; the content holds {len(many)} cert"
        assert refused in error(answer, 400)
    fine = pkcs7.serialize_certificates(many[:500], serialization.Encoding.PEM).decode()
    assert data(viewer.post(f"{API}/tools/decode-cert", json={"pem": fine}))["chain_length"] == 500


def test_a_pkcs12_file_of_too_many_certificates_is_refused(server: Server) -> None:
    """The bound holds for certificates carried in a PKCS#12 file too: the trust store
    imports none of them, however many the file holds."""
    with server.client() as api:
        root = create_root(api, unique("PKCS12 Bundle Root"))
        cert = cert_of(str(data(api.get(f"{API}/cas/{root['id']}"))["pem"]))
        p12 = serialize_key_and_certificates(
            None, None, None, [cert] * 2000, serialization.NoEncryption()
        )
        before = data(api.get(f"{API}/truststore/stats"))
        answer = api.post(
            f"{API}/truststore/import",
            files={"file": ("many.p12", p12, "application/octet-stream")},
        )
        assert "at most 500 objects are read at once" in error(answer, 400)
        assert data(api.get(f"{API}/truststore/stats")) == before


def pkcs12_hiding_a_costly_key(password: bytes, iterations: int) -> str:
    """A PKCS#12 file (no MAC) whose one SafeContents is encrypted cheaply (2,048 PBKDF2
    iterations, with `password`) and holds a shrouded key bag naming `iterations`: a count
    no one can read without decrypting first. Base64, as the JSON bodies carry it."""
    inner = keys.EncryptedPrivateKeyInfo(
        {"encryption_algorithm": pbes2(iterations), "encrypted_data": os.urandom(64)}
    )
    bag = pkcs12.SafeBag({"bag_id": "pkcs8_shrouded_key_bag", "bag_value": inner})
    outer = pbes2(2048)
    params = outer["parameters"]
    salt = params["key_derivation_func"]["parameters"]["salt"].native
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, 2048).derive(password)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(pkcs12.SafeContents([bag]).dump()) + padder.finalize()
    iv = params["encryption_scheme"]["parameters"].native
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(plain) + encryptor.finalize()
    encrypted = cms.EncryptedData(
        {
            "version": "v0",
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": outer,
                "encrypted_content": sealed,
            },
        }
    )
    safe = pkcs12.AuthenticatedSafe(
        [cms.ContentInfo({"content_type": "encrypted_data", "content": encrypted})]
    )
    content = cms.ContentInfo({"content_type": "data", "content": core.OctetString(safe.dump())})
    return base64.b64encode(pkcs12.Pfx({"version": 3, "auth_safe": content}).dump()).decode()


def test_a_costly_key_hidden_in_encrypted_contents_is_stopped(viewer: httpx.Client) -> None:
    """Its count is encrypted, so it cannot be refused unopened: the file is opened in a
    process whose CPU time is capped, and the derivation is stopped there."""
    content = pkcs12_hiding_a_costly_key(b"pw", 500_000_000)
    convert = {"content": content, "password": "pw", "output_format": "pem"}
    answer = viewer.post(f"{API}/tools/convert", json=convert, timeout=300)
    assert "takes more than 5 s of CPU to open" in error(answer, 400)
