"""Access control: API keys with roles and collection scopes, TLS and mutual TLS."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import ServerProcess, make_config, run_cli, single_person_photos
from facebank.client import Client
from facebank.errors import PermissionDenied, Unauthenticated, Unavailable
from facebank.server.app import start
from facebank.server.auth import ApiKeys
from facebank.server.engine import Engine
from facebank.transport import GrpcTransport

OBAMA = single_person_photos()["obama"]


@pytest.fixture
def keyed(tmp_path, embedder):
    """A server with API keys: admin, enroll, search, and search scoped to 'staff'."""
    engine = Engine(make_config(tmp_path / "data"), embedder=embedder)
    keys = ApiKeys(engine.store)
    secrets = {role: keys.create(role, role, [])[1] for role in ("admin", "enroll", "search")}
    secrets["staff-search"] = keys.create("staff", "search", ["staff"])[1]
    running = start(make_config(tmp_path / "data"), engine=engine)
    address = f"127.0.0.1:{running.port}"

    def as_(role: str | None) -> Client:
        return Client(GrpcTransport(address, api_key=secrets.get(role, "") if role else ""))

    yield as_, secrets, running, tmp_path
    running.stop(grace=2)


def test_no_key_or_a_wrong_key_is_unauthenticated(keyed):
    as_, _, _, _ = keyed
    with pytest.raises(Unauthenticated, match="FACEBANK_API_KEY"):
        as_(None).stats()
    forged = Client(GrpcTransport(as_("admin").transport.address, api_key="fbk_000000000000_notthekey"))
    with pytest.raises(Unauthenticated, match="not valid"):
        forged.stats()


def test_roles_are_ordered_search_enroll_admin(keyed):
    as_, _, _, _ = keyed
    as_("admin").create_collection("staff")
    as_("enroll").enroll("obama", [OBAMA[0].path])
    assert as_("search").search(OBAMA[1].path).faces[0].matches[0].identity_id == "obama"
    with pytest.raises(PermissionDenied, match="needs 'enroll'"):
        as_("search").enroll("obama", [OBAMA[1].path])
    with pytest.raises(PermissionDenied, match="needs 'admin'"):
        as_("enroll").forget("obama")
    with pytest.raises(PermissionDenied, match="needs 'admin'"):
        as_("enroll").drop_collection("staff")
    with pytest.raises(PermissionDenied, match="needs 'admin'"):
        as_("search").compact()
    assert as_("admin").forget("obama").verification.passed


def test_scoped_key_sees_only_its_collections(keyed):
    as_, _, _, _ = keyed
    as_("admin").create_collection("staff")
    as_("admin").enroll("obama", [OBAMA[0].path], collection="staff")
    scoped = as_("staff-search")
    assert scoped.search(OBAMA[1].path, collection="staff").faces[0].matches
    with pytest.raises(PermissionDenied, match="may not use collection 'default'"):
        scoped.search(OBAMA[1].path)
    with pytest.raises(PermissionDenied, match="spans every collection"):
        scoped.stats()


def test_revoked_key_stops_working_and_secrets_are_stored_hashed(keyed):
    as_, secrets, running, tmp_path = keyed
    admin = as_("admin")
    listed = admin.list_api_keys()
    assert {k.name for k in listed} == {"admin", "enroll", "search", "staff"}
    victim = next(k for k in listed if k.name == "enroll")
    admin.revoke_api_key(victim.key_id)
    with pytest.raises(Unauthenticated):
        as_("enroll").enroll("x", [OBAMA[0].path])
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    for secret in secrets.values():
        assert secret.encode() not in blobs and secret.split("_", 2)[2].encode() not in blobs


def test_keys_cli_offline_then_server_on_a_public_address(tmp_path):
    data = tmp_path / "data"
    secret = run_cli("keys", "create", "--data", str(data), "--role", "admin", "--name", "ops").stdout.strip()
    assert secret.startswith("fbk_")
    server = ServerProcess(data, listen_host="0.0.0.0").start()  # allowed now: a key exists
    try:
        anonymous = server.cli("stats", check=False)
        assert anonymous.returncode == 1 and "requires an API key" in anonymous.stderr
        assert '"collections"' in server.cli("stats", "--json", env={"FACEBANK_API_KEY": secret}).stdout
        listed = server.cli("keys", "list", env={"FACEBANK_API_KEY": secret})
        assert "admin" in listed.stdout and "ops" in listed.stdout
    finally:
        server.stop()
    assert secret not in server.log.read_text()  # never logged


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool = False, san: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path):
    def pem_key(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "facebank test CA")])
    ca = _cert("facebank test CA", ca_key, ca_name, ca_key, ca=True)
    files = {}
    for who, san in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(who, ca_key, ca_name, key, san=san)
        files[f"{who}.key"] = pem_key(key)
        files[f"{who}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
    files["ca.crt"] = ca.public_bytes(serialization.Encoding.PEM)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_tls_and_mutual_tls(pki, embedder):
    config = make_config(pki / "data", tls_cert=pki / "server.crt", tls_key=pki / "server.key", tls_client_ca=pki / "ca.crt")
    running = start(config, engine=Engine(config, embedder=embedder))
    address = f"localhost:{running.port}"
    try:
        with_cert = Client(GrpcTransport(address, tls_ca=pki / "ca.crt", tls_cert=pki / "client.crt", tls_key=pki / "client.key"))
        assert with_cert.stats().model_id
        with_cert.close()
        without_cert = Client(GrpcTransport(address, tls_ca=pki / "ca.crt", timeout=5))
        with pytest.raises(Unavailable):
            without_cert.stats()
        plaintext = Client(GrpcTransport(address, timeout=5))
        with pytest.raises(Unavailable):
            plaintext.stats()
    finally:
        running.stop(grace=1)
