"""``perdure dashboard``: a small web dashboard to watch and manage instances.

It needs the ``dashboard`` extra (Starlette and uvicorn). The pages and scripts ship in
``static/`` and load nothing from elsewhere, so the dashboard works offline. See
:mod:`perdure.tools.dashboard._security` for how it is protected.
"""

from __future__ import annotations

import socket

import uvicorn

from perdure import Client
from perdure.tools.dashboard._app import create_app
from perdure.tools.dashboard._security import is_loopback, require_token_for

__all__ = ["create_app", "is_loopback", "require_token_for", "serve"]


async def serve(
    client: Client, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None, refresh: float = 1.5
) -> None:
    """Serve the dashboard until interrupted (SIGINT/SIGTERM).

    Prints ``perdure dashboard: http://HOST:PORT/`` once it listens (with ``port=0`` the system
    picks the port).

    Raises:
        ValueError: if ``host`` is not a loopback address and there is no ``token``.
        OSError: if it cannot listen there (e.g. the port is in use).
    """
    require_token_for(host, token)
    app = create_app(client, token=token, refresh=refresh)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    listening = _listen(host, port)
    try:
        await _AnnouncingServer(config, host=host, token=bool(token)).serve(sockets=[listening])
    finally:
        listening.close()


def _listen(host: str, port: int) -> socket.socket:
    """The bound socket, made here so that an address in use is one clear error (``OSError``)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listening = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError as exc:
        listening.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listening


class _AnnouncingServer(uvicorn.Server):
    """Prints the address once the socket listens (the real port, when the system chose it)."""

    def __init__(self, config: uvicorn.Config, *, host: str, token: bool) -> None:
        super().__init__(config)
        self.host = host
        self.token = token

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            host = f"[{self.host}]" if ":" in self.host else self.host
            note = " (access token required: open it once with ?token=<token>)" if self.token else ""
            print(f"perdure dashboard: http://{host}:{port}/{note}", flush=True)
