"""Certificate helpers: the kubeadm discovery hash of a CA certificate."""

from __future__ import annotations

import hashlib


def ca_cert_hash(pem: str | bytes) -> str:
    """`sha256:<hex>` over the DER SubjectPublicKeyInfo of a CA (RFC 7469 pinning, as kubeadm does).

    Works for RSA and ECDSA CAs alike (the openssl-rsa pipeline in the docs fails on ECDSA).
    """
    # Deferred: only joins need it, and it is one of the heavier imports.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    data = pem.encode() if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()
