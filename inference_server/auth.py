"""CURVE authentication of the server's clients (`seethrough serve --server-key ... --client-keys ...`).

pyzmq's ThreadAuthenticator answers ZeroMQ's authentication requests (ZAP) on its own thread with
its own socket. A client is served when its public key is in the --client-keys folder; the folder
is read at every connection, so adding or removing a NAME.key file takes effect for the next
connection without a restart. Refusals are logged once per key, however often a refused client
reconnects; a client without keys (or with the wrong server key) fails the handshake before any
key is seen, and the router's monitor logs that once (see `HandshakeLog`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from seethrough_core.keys import KeyFileError, KeyPair, read_key_pair, read_public_keys

log = logging.getLogger(__name__)

_MAX_LOGGED_KEYS = 1000  # refused keys remembered for "log once"; beyond it refusals go unlogged
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass(frozen=True)
class CurveSettings:
    """The server's key pair and the folder of the clients it serves, read and checked at startup."""

    server: KeyPair
    client_keys_dir: Path

    @classmethod
    def from_paths(cls, server_key: str | Path, client_keys_dir: str | Path) -> CurveSettings:
        pair = read_key_pair(server_key)
        keys = read_public_keys(client_keys_dir)
        if not keys:
            raise KeyFileError(
                f"{client_keys_dir} holds no client public keys (NAME.key files): nobody could connect. "
                "Make a pair per client with `seethrough keys create NAME` and copy NAME.key there"
            )
        return cls(pair, Path(client_keys_dir))


class _KnownClients:
    """The authenticator's credentials provider: allowed when the key is in the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            allowed = key in read_public_keys(self.folder)
        except KeyFileError as exc:
            log.error("cannot read the client keys, refusing every client: %s", exc)
            return False
        if not allowed and key not in self.refused and len(self.refused) < _MAX_LOGGED_KEYS:
            self.refused.add(key)
            log.warning(
                "refused a client with public key %s: it is not in %s (further attempts with this key "
                "are not logged). To serve it, copy its NAME.key file there.",
                key.decode(),
                self.folder,
            )
        return allowed


class Gatekeeper:
    """CURVE on the server's ROUTER socket, with the authenticator thread that checks clients."""

    def __init__(self, context: zmq.Context, settings: CurveSettings) -> None:
        self.settings = settings
        self._auth = ThreadAuthenticator(context, log=logging.getLogger(__name__ + ".zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", _KnownClients(settings.client_keys_dir))

    def secure(self, router: zmq.Socket) -> None:
        """Make `router` a CURVE server (before it binds)."""
        router.curve_server = True
        router.curve_publickey = self.settings.server.public
        router.curve_secretkey = self.settings.server.secret

    def stop(self) -> None:
        self._auth.stop()


class HandshakeLog:
    """Logs the first failed CURVE handshake (a client without keys, or with a wrong server key);
    fed by the router's monitor (inference_server.intake)."""

    def __init__(self) -> None:
        self.logged = False

    def on_failure(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return  # the authenticator logged the key already
        if not self.logged:
            self.logged = True
            log.warning(
                "refused a connection that failed the CURVE handshake: a client without keys, or with "
                "a wrong server public key (further failures are not logged). Clients need "
                "--server-public-key and --client-key (add-on: the Server Keys preferences)."
            )
