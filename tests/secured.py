"""A secured listener in front of the local broker, for the tests of ``kafka.security_*``.

The local broker (Tansu, memory storage) cannot authenticate clients itself, so the tests
put this front before it: it accepts TLS (optionally requiring a client certificate) and
speaks the server side of the Kafka protocol's SASL exchange (SaslHandshake,
SaslAuthenticate; PLAIN and SCRAM-SHA-256/512 as RFC 5802 and RFC 7677 define them) before
it passes the connection's bytes through to the broker, unchanged. The broker advertises
the front's address, so a client's every connection goes through it, as it would to a
secured cluster's listener. An ApiVersions request before authentication is the broker's
to answer (it lists both SASL requests); any other request before it closes the
connection, as a Kafka broker does.

``Certificates`` makes a CA, a server certificate for 127.0.0.1 and localhost, and a
client certificate, for one test session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import hmac
import os
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streams.dev.broker import LocalBroker
from tests.integration.harness import free_port

__all__ = ["Certificates", "Front", "secured_broker"]

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
SCRAM_ITERATIONS = 4096
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


@dataclass(frozen=True)
class Certificates:
    """PEM files in ``directory``: ``ca.pem``; ``server.pem``/``server.key`` (for
    127.0.0.1 and localhost); ``client.pem``/``client.key``; and ``other-ca.pem``, a CA
    that signed none of them (a client told to trust it trusts no server here)."""

    directory: Path

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca = _authority("retrostitch test CA")
        _write(directory / "ca.pem", ca)
        _, other = _authority("another CA")
        _write(directory / "other-ca.pem", other)
        for name, usage in (
            ("server", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
        ):
            key, cert = _signed(name, usage, ca_key, ca)
            _write(directory / f"{name}.pem", cert)
            (directory / f"{name}.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        return cls(directory)

    def path(self, name: str) -> Path:
        return self.directory / name

    def server_context(self, client_certificates: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.path("server.pem"), self.path("server.key"))
        if client_certificates:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.path("ca.pem"))
        return context


def _authority(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _signed(
    name: str, usage: x509.ObjectIdentifier, ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    names = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
    cert = (
        _builder(subject, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _write(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Front:
    """A listener on loopback before ``upstream`` (host, port): TLS where ``tls`` is
    given, SASL where ``users`` are (user -> password) with ``mechanisms`` enabled."""

    upstream: tuple[str, int]
    tls: ssl.SSLContext | None = None
    users: dict[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    port: int = 0
    #: what the front saw: (mechanism, user, accepted) per authentication
    attempts: list[tuple[str, str, bool]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Front:
        self.port = self.port or free_port()
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", self.port, ssl=self.tls)
            )
            started.set()
            self._loop.run_forever()
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="kafka-front", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:  # the broker has stopped
            writer.close()
            return
        try:
            if self.users and not await self._authenticate(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            frame = await _frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                writer.write(_sized(await _frame(up_reader)))
                continue
            body = _body(frame, flexible=api_key == SASL_AUTHENTICATE and version >= 2)
            if api_key == SASL_HANDSHAKE and mechanism is None:
                wanted = _string(body, 0)[0]
                ok = wanted in self.mechanisms
                mechanism = wanted if ok else None
                listed = b"".join(_encode_string(m) for m in self.mechanisms)
                error = 0 if ok else UNSUPPORTED_SASL_MECHANISM
                payload = struct.pack(">ihi", correlation, error, len(self.mechanisms)) + listed
                writer.write(_sized(payload))
                if not ok:
                    return False
                continue
            if api_key != SASL_AUTHENTICATE or mechanism is None:
                return False  # a request before authentication: the connection is closed
            token = _auth_bytes(body, version)
            if mechanism == "PLAIN":
                _, user, password = token.decode().split("\0")
                ok = self.users.get(user) == password
                self.attempts.append((mechanism, user, ok))
                writer.write(_authenticated(correlation, version, ok, b""))
                return ok
            if scram is None:
                scram = _Scram(mechanism, self.users)
                writer.write(_authenticated(correlation, version, True, scram.first(token)))
                continue
            final = scram.final(token)
            self.attempts.append((mechanism, scram.user, final is not None))
            writer.write(_authenticated(correlation, version, final is not None, final or b""))
            return final is not None


class _Scram:
    """The server side of one SCRAM exchange (RFC 5802), without channel binding."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = _HASHES[mechanism]
        self.users = users
        self.user = ""
        self.salt = os.urandom(16)
        self.nonce = ""
        self.first_bare = ""
        self.server_first = ""

    def first(self, token: bytes) -> bytes:
        message = token.decode()
        self.first_bare = message.split(",", 2)[2]  # after the GS2 header "n,,"
        fields = dict(part.split("=", 1) for part in self.first_bare.split(","))
        self.user = fields["n"].replace("=2C", ",").replace("=3D", "=")
        self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
        salt = base64.b64encode(self.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={SCRAM_ITERATIONS}"
        return self.server_first.encode()

    def final(self, token: bytes) -> bytes | None:
        """The server's final message, or None where the proof is wrong."""
        message = token.decode()
        without_proof, _, proof = message.rpartition(",p=")
        fields = dict(part.split("=", 1) for part in without_proof.split(","))
        password = self.users.get(self.user)
        if password is None or fields.get("r") != self.nonce:
            return None
        salted = hashlib.pbkdf2_hmac(self.hash, password.encode(), self.salt, SCRAM_ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", self.hash)
        stored_key = hashlib.new(self.hash, client_key).digest()
        auth = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth, self.hash)
        given = base64.b64decode(proof)
        recovered = bytes(a ^ b for a, b in zip(given, signature, strict=False))
        if hashlib.new(self.hash, recovered).digest() != stored_key:
            return None
        server_key = hmac.digest(salted, b"Server Key", self.hash)
        return b"v=" + base64.b64encode(hmac.digest(server_key, auth, self.hash))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _sized(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _body(frame: bytes, flexible: bool) -> bytes:
    """A request's body: after its header (client id, and tagged fields where flexible)."""
    (length,) = struct.unpack(">h", frame[8:10])
    at = 10 + max(length, 0)
    if flexible:
        count, at = _uvarint(frame, at)
        for _ in range(count):
            _, at = _uvarint(frame, at)
            size, at = _uvarint(frame, at)
            at += size
    return frame[at:]


def _string(data: bytes, at: int) -> tuple[str, int]:
    (length,) = struct.unpack(">h", data[at : at + 2])
    return data[at + 2 : at + 2 + length].decode(), at + 2 + length


def _encode_string(value: str) -> bytes:
    return struct.pack(">h", len(value)) + value.encode()


def _auth_bytes(body: bytes, version: int) -> bytes:
    if version >= 2:
        length, at = _uvarint(body, 0)
        return body[at : at + length - 1]
    (length,) = struct.unpack(">i", body[:4])
    return body[4 : 4 + length]


def _authenticated(correlation: int, version: int, ok: bool, token: bytes) -> bytes:
    """A SaslAuthenticate response (v0-v2)."""
    error = 0 if ok else SASL_AUTHENTICATION_FAILED
    message = b"" if ok else b"Authentication failed: invalid credentials"
    if version >= 2:
        text = _uvarint_bytes(len(message) + 1) + message if message else b"\x00"
        payload = (
            struct.pack(">i", correlation) + b"\x00" + struct.pack(">h", error) + text
            + _uvarint_bytes(len(token) + 1) + token + struct.pack(">q", 0) + b"\x00"
        )  # fmt: skip
        return _sized(payload)
    text = struct.pack(">h", len(message)) + message if message else struct.pack(">h", -1)
    payload = struct.pack(">ih", correlation, error) + text + struct.pack(">i", len(token)) + token
    if version >= 1:
        payload += struct.pack(">q", 0)
    return _sized(payload)


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@contextlib.contextmanager
def secured_broker(front: Front) -> Iterator[Front]:
    """A local broker that advertises ``front``'s address, and the front before it."""
    front.port = front.port or free_port()
    broker = LocalBroker(advertised=f"127.0.0.1:{front.port}")
    front.upstream = (broker.host, broker.port)
    front.start()
    try:
        with broker:
            yield front
    finally:
        front.stop()
