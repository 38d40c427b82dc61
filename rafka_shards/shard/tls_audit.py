"""Failed TLS handshakes of a shard's SSL listeners, for the audit log (issue 18).

Runs in a shard process. asyncio and uvloop drop a connection whose TLS handshake fails without telling its protocol
(neither ``connection_made`` nor ``connection_lost`` is called, and the error, an ``OSError``, is not passed to the
loop's exception handler), so the shard never sees it. What does see it is the ``ssl.SSLObject`` both event loops
make with the listener's context (``SSLContext.wrap_bio``): ``audit_failed_handshakes`` gives the context an
``SSLObject`` class whose ``do_handshake`` reports OpenSSL's failure (no client certificate, an untrusted or expired
one, not TLS at all) before raising it as before. The client's address is not known there: the event says the
listener, the time and OpenSSL's reason (``detail``), and its ``client`` is empty. Handshakes that time out
(``TLS_HANDSHAKE_TIMEOUT_S``) are not reported.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from rafka_shards.security.audit import UNKNOWN, AuditEvent, AuthenticationEvent, AuthFailure


def audit_failed_handshakes(context: ssl.SSLContext, listener: str, audit: Callable[[AuditEvent], None]) -> None:
    """Have every failed TLS handshake of ``context`` (a listener's, as given to ``create_server``) recorded."""

    class _AuditedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # the handshake goes on when more bytes come
            except ssl.SSLError as e:
                detail = str(e.reason or type(e).__name__)
                if isinstance(e, ssl.SSLCertVerificationError) and e.verify_message:
                    detail = f"{detail}: {e.verify_message}"
                audit(
                    AuthenticationEvent(
                        UNKNOWN, "TLS", listener, UNKNOWN, False, AuthFailure.TLS_HANDSHAKE, detail=detail
                    )
                )
                raise

    context.sslobject_class = _AuditedSSLObject
