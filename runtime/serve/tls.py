"""TLS for ``nmc serve`` and its clients, through Python's :mod:`ssl` module with
certificate files the operator gives (nothing is generated or fetched)."""
from __future__ import annotations

import ssl

from nmc.errors import OptionError


def server_context(cert, key) -> ssl.SSLContext:
    """A server-side context from a PEM certificate (chain) and its private key
    (``nmc serve --tls-cert --tls-key``); TLS 1.2 or newer."""
    if not cert or not key:
        raise OptionError("TLS needs both --tls-cert and --tls-key", hint="pass the PEM certificate and its key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise OptionError(f"cannot load the TLS certificate {cert} / key {key} ({e})", path=cert,
                          hint="pass a PEM certificate (--tls-cert) and its unencrypted PEM key (--tls-key)") from None
    return ctx


def client_context(cafile=None) -> ssl.SSLContext:
    """A client-side context verifying the server's certificate and host name against
    ``cafile`` (``nmc stream --tls-ca``; None: the system's CA store)."""
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as e:
        raise OptionError(f"cannot load the CA file {cafile} ({e})", path=cafile,
                          hint="pass a PEM file of the CA that signed the server's certificate") from None
