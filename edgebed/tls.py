"""TLS between the controller and its agents: a small certificate authority, and the checks of
the PEM files both sides load.

    edgebed tls ca --dir D                                    D/ca.pem, D/ca.key
    edgebed tls issue --dir D --name rpi --ip 10.0.0.5        D/rpi.pem, D/rpi.key (an agent)
    edgebed tls issue --dir D --name controller --client      D/controller.pem, D/controller.key

Keys are ECDSA P-256 (what every gRPC build and grpcurl accept), written once with mode 0600 and
never overwritten. An agent's (server) certificate names the addresses the controller dials as
subjectAltName entries: gRPC checks the host of the target `ip:port` against them (an IP address
against the IP entries, a host name against the DNS ones). Extended key usage is serverAuth for
agents and clientAuth for the controller, so neither certificate can stand in for the other.

Every problem raises TlsError with a message that names the file and says what is wrong; no
message ever holds a private key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgebed.errors import UsageError

CA_DAYS = 3650
LEAF_DAYS = 825
# A CA file or a pasted certificate larger than this is refused (a chain of a few PEM
# certificates is a few kilobytes).
MAX_PEM = 65_536
# Certificates start this much in the past: a host whose clock runs a little behind still
# accepts a certificate issued a moment ago.
_BACKDATE = datetime.timedelta(minutes=5)
# Used with fullmatch: `$` also matches before a final newline.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A DNS name, lower case; the first label may be a wildcard ('*').
_HOST_NAME = re.compile(r"(?=.{1,253}$)(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


class TlsError(Exception):
    """A certificate, key or CA file is unreadable or unusable; the message says which and why.
    `role` is "key" when the private key is at fault, else "certificate"."""

    def __init__(self, message: str, role: str = "certificate") -> None:
        super().__init__(message)
        self.role = role


@dataclass(frozen=True)
class Identity:
    """A certificate chain and its private key, both PEM, as gRPC takes them. The key is kept
    out of repr()."""

    certificate_chain: bytes
    private_key: bytes

    def __repr__(self) -> str:
        return f"Identity(certificate_chain=<{len(self.certificate_chain)} bytes>, private_key=<hidden>)"


# -- reading -----------------------------------------------------------------------------------


def _read(path: str | os.PathLike[str], what: str, role: str = "certificate") -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{what} {path}: no such file", role) from None
    except IsADirectoryError:
        raise TlsError(f"{what} {path}: is a directory, not a PEM file", role) from None
    except OSError as exc:
        raise TlsError(f"{what} {path}: cannot read: {exc.strerror}", role) from None
    if len(data) > MAX_PEM:
        raise TlsError(f"{what} {path}: too large for a PEM file ({len(data)} bytes)", role)
    return data


def parse_certificates(pem: bytes | str, what: str = "certificate") -> list[x509.Certificate]:
    """The certificates in PEM text (one or more 'BEGIN CERTIFICATE' blocks); TlsError when
    there is none, the text is not PEM, or it is larger than MAX_PEM."""
    data = pem.encode("utf-8", "replace") if isinstance(pem, str) else pem
    if len(data) > MAX_PEM:
        raise TlsError(f"{what}: too large ({len(data)} bytes; at most {MAX_PEM})")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsError(f"{what}: no PEM certificate ('-----BEGIN CERTIFICATE-----') in it")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsError(f"{what}: not a valid PEM certificate ({exc})") from None


def normalized_ca_pem(pem: str, what: str = "the CA certificate") -> str:
    """A CA bundle (or a pinned self-signed certificate) as clean PEM: each certificate
    re-encoded, so that nothing but certificates is stored. TlsError when it holds none, is not
    PEM, or holds a certificate that has expired."""
    certificates = parse_certificates(pem, what)
    now = datetime.datetime.now(datetime.UTC)
    for certificate in certificates:
        if certificate.not_valid_after_utc < now:
            subject = certificate.subject.rfc4514_string() or "(no subject)"
            raise TlsError(f"{what}: the certificate {subject} expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def read_ca_file(path: str | os.PathLike[str], what: str = "CA file") -> bytes:
    """A CA bundle read from `path`, checked (normalized_ca_pem), as PEM bytes."""
    return normalized_ca_pem(_read(path, what).decode("utf-8", "replace"), f"{what} {path}").encode("ascii")


def load_identity(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
    *, cert_what: str = "certificate", key_what: str = "key",
) -> Identity:
    """A certificate (chain) and its unencrypted private key read from PEM files; TlsError when a
    file is unreadable, not PEM, the key is encrypted, or the key is not the certificate's."""
    chain = _read(cert_path, cert_what)
    certificates = parse_certificates(chain, f"{cert_what} {cert_path}")
    key_data = _read(key_path, key_what, "key")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TlsError(
            f"{key_what} {key_path}: the key is encrypted; gRPC needs it unencrypted (mode 0600)", "key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"{key_what} {key_path}: not a PEM private key", "key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != certificates[0].public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise TlsError(f"{key_what} {key_path} is not the key of the certificate in {cert_path}", "key")
    now = datetime.datetime.now(datetime.UTC)
    if certificates[0].not_valid_after_utc < now:
        raise TlsError(f"{cert_what} {cert_path}: expired on {certificates[0].not_valid_after_utc:%Y-%m-%d}")
    return Identity(certificate_chain=chain, private_key=key_data)


# -- issuing -----------------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Creates `path` with `mode` (never widened by the umask's absence, never an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_pair(
    directory: Path, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise UsageError(
                f"{path} exists: edgebed never overwrites a certificate or key; remove it or choose another name"
            )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        _write_new(key_path, key_pem, 0o600)
        try:
            _write_new(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        except BaseException:
            # No key without its certificate: a second run can then start afresh.
            key_path.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UsageError(f"{directory}: cannot write {name}.pem and {name}.key: {exc.strerror}") from None
    return cert_path, key_path


def _check_name(name: str) -> str:
    if not _FILE_NAME.fullmatch(name):
        raise UsageError(f"--name must be letters, digits, '-', '_' or '.' (at most 64), got {name!r}")
    return name


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key, days: int, *, not_after: datetime.datetime | None = None
) -> x509.CertificateBuilder:
    """Valid from a little before now for `days` days, but not after `not_after` (the CA's end)."""
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    if not_after is not None:
        end = min(end, not_after)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def create_ca(
    directory: str | os.PathLike[str], *, common_name: str = "edgebed CA", days: int = CA_DAYS
) -> tuple[Path, Path]:
    """Creates `directory` (mode 0700 when new) with ca.pem (a self-signed CA certificate valid
    `days` days, that signs end certificates only) and ca.key (mode 0600). Returns both paths;
    UsageError when either exists or cannot be written."""
    if not 1 <= days <= 36500:
        raise UsageError(f"--days must be between 1 and 36500, got {days}")
    folder = Path(directory)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {folder}: cannot create: {exc.strerror}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write_pair(folder, "ca", certificate, key)


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        identity = load_identity(folder / "ca.pem", folder / "ca.key", cert_what="CA certificate", key_what="CA key")
    except TlsError as exc:
        raise UsageError(f"{exc} (create the CA first: edgebed tls ca --dir {folder})") from None
    certificate = x509.load_pem_x509_certificate(identity.certificate_chain)
    key = serialization.load_pem_private_key(identity.private_key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{folder / 'ca.key'}: not an ECDSA key; create the CA with edgebed tls ca")
    return certificate, key


def issue(
    directory: str | os.PathLike[str],
    name: str,
    *,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    client: bool = False,
    days: int = LEAF_DAYS,
) -> tuple[Path, Path]:
    """Issues NAME.pem and NAME.key (mode 0600) in `directory`, signed by its ca.pem/ca.key.

    A server certificate (an agent's; client=False) needs at least one of `ips` (IPv4 or IPv6
    addresses) or `dns` (host names): the names the controller dials, as subjectAltName. A client
    certificate (the controller's; client=True) may carry none. Valid `days` days, never beyond
    the CA. Returns both paths; UsageError on bad input or when either file exists.
    """
    _check_name(name)
    if not 1 <= days <= 36500:
        raise UsageError(f"--days must be between 1 and 36500, got {days}")
    addresses = []
    for text in ips:
        try:
            addresses.append(ipaddress.ip_address(text.strip().strip("[]")))
        except ValueError:
            raise UsageError(
                f"--ip must be an IPv4 or IPv6 address, got {text!r} (a host name goes in --dns)"
            ) from None
    hosts = []
    for text in dns:
        host = text.strip().rstrip(".").lower()
        if not _HOST_NAME.fullmatch(host):
            raise UsageError(f"--dns must be a host name, got {text!r}")
        hosts.append(host)
    if not client and not addresses and not hosts:
        raise UsageError("an agent's certificate needs --ip or --dns: the address the controller dials")
    folder = Path(directory)
    ca_certificate, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = _builder(
        subject, ca_certificate.subject, key.public_key(), days, not_after=ca_certificate.not_valid_after_utc
    )
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = [x509.IPAddress(a) for a in addresses] + [x509.DNSName(h) for h in hosts]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _write_pair(folder, name, builder.sign(ca_key, hashes.SHA256()), key)


# -- `edgebed tls ...` ---------------------------------------------------------------------------


def run_tls(args) -> int:
    """The `edgebed tls ca|issue` handler: prints the files written, one per line."""
    if args.tls_command == "ca":
        paths = create_ca(args.dir, days=args.days if args.days is not None else CA_DAYS)
    else:
        paths = issue(
            args.dir, args.name, ips=args.ip or (), dns=args.dns or (), client=args.client,
            days=args.days if args.days is not None else LEAF_DAYS,
        )
    for path in paths:
        print(f"wrote {path}")
    return 0
