"""Certificates and keys for the control plane (CA, serving cert, client certs, SA signing key) and the stand-ins."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for a sandbox that is kept for months; these certs never leave 127.0.0.1.
VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class Pki:
    """Paths of everything the apiserver and its clients need."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path  # one RSA private key for both --service-account-key-file and -signing-key-file


def write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def x509_name(common_name: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def local_sans(host: str = "127.0.0.1") -> list[x509.GeneralName]:
    return [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]


def builder(
    subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes, validity: dt.timedelta = VALIDITY
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + validity)
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # fast to generate, like envtest's TinyCA


def _key_usage(*, signs_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=False,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certs,
        crl_sign=signs_certs,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(
    common_name: str, *, validity: dt.timedelta = VALIDITY, path_length: int | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key."""
    key, name = new_key(), x509_name(common_name)
    cert = (
        builder(name, name, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(signs_certs=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_serving_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    sans: list[x509.GeneralName],
    *,
    validity: dt.timedelta = VALIDITY,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for `sans` from the CA, and its key."""
    key = new_key()
    cert = (
        builder(x509_name(common_name), ca_cert.subject, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def issue_client_cert(pki: Pki, cert_path: Path, key_path: Path, user: str, groups: tuple[str, ...]) -> None:
    """Issue a client certificate: CN is the user name, O entries are the groups."""
    ca_cert, ca_key = load_ca(pki.ca_cert, pki.ca_key)
    key = new_key()
    cert = (
        builder(x509_name(user, groups), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_key(key_path, key)
    write_cert(cert_path, cert)


def create_pki(cert_dir: Path) -> Pki:
    """Create a CA, a serving cert for 127.0.0.1/localhost, an admin (system:masters) cert and an SA key."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    pki = load_pki(cert_dir)
    ca_cert, ca_key = new_ca("kaito-portal-devcluster-ca")
    write_key(pki.ca_key, ca_key)
    write_cert(pki.ca_cert, ca_cert)
    sans = [
        *local_sans(),
        # The in-cluster names of the `kubernetes` Service; unused locally but harmless.
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    serving, serving_key = issue_serving_cert(ca_cert, ca_key, "kube-apiserver", sans)
    write_key(pki.serving_key, serving_key)
    write_cert(pki.serving_cert, serving)

    issue_client_cert(pki, pki.admin_cert, pki.admin_key, "admin", ("system:masters",))
    write_key(pki.sa_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return pki


def load_pki(cert_dir: Path) -> Pki:
    """Return the Pki paths of an existing cert folder (e.g. a kept sandbox)."""
    return Pki(
        *(
            cert_dir / n
            for n in (
                "ca.crt",
                "ca.key",
                "apiserver.crt",
                "apiserver.key",
                "admin.crt",
                "admin.key",
                "sa.key",
            )
        )
    )
