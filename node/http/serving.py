"""How the node's HTTP server faces the network: TLS, headers on every answer, and how
long a client may take to send its request headers.

Slow request headers: aiohttp's server (3.14) arms its keep-alive timer when a
connection opens and re-arms it only after a response; when it fires while the handler
still waits for a complete request, the connection is closed. So ``keepalive_timeout``
bounds both the time to send the first request's line and headers and the idle time
between requests, and data trickling in does not extend it. A request whose headers are
in is no longer timed by it (a large upload may take long; its body has its own stall
limit, node/http/body.py).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from aiohttp import web, web_response

# No version: it tells a scanner which bugs to try.
SERVER_NAME = "PACSmesh"
# Answers that may carry patient data must not be kept by browsers or proxies.
NO_STORE_PREFIXES = ("/api", "/dicom-web", "/wado")


class HttpTlsError(ValueError):
    """The certificate or key for HTTPS cannot be used; one line for the admin."""


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE  # clients authenticate with tokens, not certificates
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise HttpTlsError(f"cannot use {cert} and {key} for HTTPS: {exc}") from None
    return context


async def _answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME
    if request.path.startswith(NO_STORE_PREFIXES):
        response.headers["Cache-Control"] = "no-store"


def harden(app: web.Application) -> None:
    """Every answer of ``app`` (errors included) gets the headers above."""
    app.on_response_prepare.append(_answer_headers)
    # Answers to requests aiohttp cannot parse (400 for a bad request line) are written
    # before any application sees them, so no signal or middleware reaches them
    # (aio-libs/aiohttp#3287, #8870): the default they fall back on is this module
    # constant, read when each answer is prepared. It is this process's only server.
    web_response.SERVER_SOFTWARE = SERVER_NAME


def local_client(http_tls: str, http_tls_cert: Path | None,
                 identity_cert: Path) -> tuple[str, ssl.SSLContext | None]:
    """How the CLI on this host reaches its node: the scheme, and for HTTPS a context
    that trusts exactly the certificate the node presents (it may name a host, not
    127.0.0.1, so the name is not checked)."""
    if http_tls == "off":
        return "http", None
    cert = http_tls_cert if http_tls == "on" and http_tls_cert else identity_cert
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # trust the leaf itself
    return "https", context
