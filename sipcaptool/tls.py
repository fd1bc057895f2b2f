"""TLS for HEP between machines: the contexts of both ends, and what a failure means.

Python's :mod:`ssl` (OpenSSL) does the work; this module only builds the contexts the
collector (``hep --listen tls:…``) and the agents (``--hep-to tls:…``, ``hep
--forward-to tls:…``) use, and names a failed handshake for the counters:

* collector: ``--tls-cert`` and ``--tls-key`` (PEM) are its certificate and key;
  ``--tls-ca`` (PEM) makes a client certificate signed by that CA required.
* agent: ``--tls-ca`` is the CA the collector's certificate must be signed by (without
  it the system's CAs); the name or address in ``--hep-to`` must be in the certificate.
  ``--tls-cert``/``--tls-key`` give the agent a client certificate.

TLS 1.2 at least. The HEP auth key applies inside TLS as on any transport.
"""

from __future__ import annotations

import ssl

from .errors import ConfigError

__all__ = ["client_context", "failure_reason", "server_context"]


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str | None, what: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise ConfigError(f"{what}: {e.filename}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"{what} {cert}" + (f" / {key}" if key else "")
                          + f": cannot load the certificate and key ({e})") from None


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except FileNotFoundError:
        raise ConfigError(f"--tls-ca {ca}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"--tls-ca {ca}: cannot load the CA certificate(s) ({e})") from None


def server_context(cert: str | None, key: str | None, ca: str | None = None) -> ssl.SSLContext:
    """The collector's context: its certificate and key; with ``ca``, client
    certificates signed by it are required.

    Raises:
        ConfigError: a missing option or a file that cannot be loaded.
    """
    if not cert:
        raise ConfigError("--listen tls:… needs --tls-cert (and --tls-key unless the key is "
                          "in the certificate file)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key, "--tls-cert")
    if ca:
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext:
    """The agent's context: the collector's certificate verified against ``ca`` (else
    the system's CAs) and its name checked; a client certificate when ``cert`` is given.

    Raises:
        ConfigError: a file that cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        _load_ca(ctx, ca)
    else:
        ctx.load_default_certs()
    if cert:
        _load_chain(ctx, cert, key, "--tls-cert")
    return ctx


_PLAIN = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
          "PACKET_LENGTH_TOO_LONG", "RECORD_TOO_LONG", "UNEXPECTED_RECORD")
_CERT = ("CERTIFICATE", "UNKNOWN_CA", "PEER_DID_NOT_RETURN", "BAD_CERT", "CERT_",
         "UNSUPPORTED_CERT", "EXPIRED", "REVOKED", "HOSTNAME", "IP_ADDRESS_MISMATCH")


def failure_reason(e: BaseException) -> str:
    """A handshake failure as a counter reason: ``plain-text`` (the peer does not speak
    TLS), ``bad-certificate`` (ours or theirs refused), ``closed`` (the peer went away),
    or ``handshake-failed``."""
    text = f"{getattr(e, 'reason', '') or ''} {getattr(e, 'verify_message', '') or ''} {e}"
    upper = text.upper()
    if isinstance(e, ssl.SSLCertVerificationError) or any(k in upper for k in _CERT):
        return "bad-certificate"
    if any(k in upper for k in _PLAIN):
        return "plain-text"
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)) or \
            "EOF" in upper:
        return "closed"
    return "handshake-failed"
