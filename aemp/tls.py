# Certificates for TLS between nodes.
#
# Nodes of one network share one PEM bundle (private key + certificate, as
# AnyEvent::MP's `cert` key holds it): each side presents it and accepts
# exactly the peers whose certificate verifies against it, so the bundle
# works like a shared secret that also encrypts. No host name is checked:
# node IDs, not DNS names, identify nodes.

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

from ._errors import ConfigError


def make_certificate(common_name: str = "aemp", days: int = 3650) -> str:
    """Make a self-signed EC key and certificate; return them as one PEM text."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # it is its own CA: key usage and key identifiers keep strict verifiers happy
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (key_pem + cert.public_bytes(serialization.Encoding.PEM)).decode("ascii")


def ssl_contexts(pem: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server- and client-side contexts that present `pem` and require peers signed by it."""
    if "PRIVATE KEY-----" not in pem or "CERTIFICATE-----" not in pem:
        raise ConfigError(
            "'cert' must be PEM text holding a private key and a certificate "
            "(make one with aemp.tls.make_certificate() or 'aemp gencert')"
        )
    contexts = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        # load_cert_chain only reads files; the PEM lives in a private temp file briefly
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "cert.pem"
            path.touch(mode=0o600)
            path.write_text(pem)
            try:
                ctx.load_cert_chain(path)
            except ssl.SSLError as e:
                raise ConfigError(f"'cert' could not be loaded: {e.reason or e}") from e
        ctx.load_verify_locations(cadata=_certificates_only(pem))
        contexts.append(ctx)
    return contexts[0], contexts[1]


def _certificates_only(pem: str) -> str:
    out, keep = [], False
    for line in pem.splitlines():
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            keep = True
        if keep:
            out.append(line)
        if line.startswith("-----END CERTIFICATE-----"):
            keep = False
    return "\n".join(out) + "\n"
