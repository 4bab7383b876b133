"""Who may use the dashboard: the access token, the CSRF token and the Origin and Host checks.

- **Loopback only without a token.** Bound to any other address the dashboard refuses to start
  unless an access token is given; with a token, every request must carry it (the ``token`` query
  parameter once, which sets an HttpOnly cookie, or an ``Authorization: Bearer`` header).
- **No DNS rebinding.** Without a token the ``Host`` header must name a loopback address, so a
  page on another site cannot reach the dashboard through a name that resolves to 127.0.0.1.
- **No cross-site actions.** Actions are POST only, and each must carry a CSRF token derived from
  the session cookie (HMAC with a per-process secret, embedded in the page) and an ``Origin``
  header that names the dashboard itself. The cookies are ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

__all__ = ["Guard", "is_loopback", "require_token_for"]

SESSION_COOKIE = "perdure_session"
TOKEN_COOKIE = "perdure_token"
CSRF_HEADER = "x-perdure-csrf"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``, maybe with brackets) is a loopback address."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_token_for(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without an access token.

    Raises:
        ValueError: if ``host`` is not a loopback address and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise ValueError(
            f"the dashboard listens on {host}, which is not a loopback address: "
            "give an access token with --token (or PERDURE_TOKEN) so that only you can use it"
        )
    if token is not None and len(token) < 16:
        raise ValueError("the access token must be at least 16 characters long")


def _host_name(host_header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8080`` → ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """The checks of one dashboard process (its CSRF secret lives as long as the process)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._secret = secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        """A fresh session id for the session cookie."""
        return secrets.token_urlsafe(24)

    def csrf_token(self, session: str) -> str:
        """The CSRF token bound to ``session``."""
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str | None, sent: str | None) -> bool:
        """Whether ``sent`` is the CSRF token of ``session``."""
        return bool(session and sent) and hmac.compare_digest(self.csrf_token(session or ""), sent or "")

    def token_ok(self, presented: str | None) -> bool:
        """Whether the request may pass the access-token check."""
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    def host_ok(self, host_header: str | None) -> bool:
        """Without a token only loopback host names are served (DNS-rebinding defence)."""
        if self.token is not None:
            return True
        return host_header is not None and is_loopback(_host_name(host_header))

    @staticmethod
    def origin_ok(origin: str | None, scheme: str, host_header: str | None) -> bool:
        """Whether ``Origin`` names this dashboard (the scheme and host the request came in on)."""
        return origin is not None and host_header is not None and origin == f"{scheme}://{host_header}"
