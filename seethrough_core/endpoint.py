"""Server addresses: ZeroMQ's tcp://host:port, checked with messages a user can act on.

Both sides read addresses typed by people (the add-on's preferences field, `seethrough serve
--bind`), and the commonest mistakes are an http:// prefix, a missing port, or binding every
interface by accident. One parser here gives both sides the same answers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import SeeThroughError

DEFAULT_PORT = 5555
DEFAULT_ENDPOINT = f"tcp://127.0.0.1:{DEFAULT_PORT}"

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?/?$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")


class EndpointError(SeeThroughError, ValueError):
    """An address that ZeroMQ cannot use, or that the server refuses to bind."""


@dataclass(frozen=True)
class Endpoint:
    host: str  # as written, IPv6 without brackets; "*" means every interface
    port: int | None  # None: "*" (an ephemeral port, binding only)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{'*' if self.port is None else self.port}"

    @property
    def needs_ipv6(self) -> bool:
        """An IPv6 address: the socket needs ZMQ_IPV6 (left off otherwise, so that "localhost" and
        "*" keep meaning IPv4 as clients and servers expect)."""
        return ":" in self.host

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can reach the address (conservative: unknown names are not)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # "*", interface names and other host names may face the network


def parse_endpoint(address: str, *, for_bind: bool = False) -> Endpoint:
    """Parse "tcp://host:port"; "*" as the port (an ephemeral one) is accepted only for binding."""
    text = address.strip() if isinstance(address, str) else address
    if not isinstance(text, str) or not text:
        raise EndpointError(f"the server address is empty; use tcp://host:port, e.g. {DEFAULT_ENDPOINT}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise EndpointError(
            f"{text!r} has no scheme: ZeroMQ addresses look like tcp://host:port, e.g. tcp://{text}"
            if ":" in text
            else f"{text!r} is not a ZeroMQ address: use tcp://host:port, e.g. tcp://{text}:{DEFAULT_PORT}"
        )
    if scheme.lower() != "tcp":
        raise EndpointError(
            f"{text!r} is not a ZeroMQ address: the server speaks ZeroMQ, not {scheme}; "
            f"ZeroMQ uses tcp://host:port, e.g. tcp://{rest.rstrip('/') or 'localhost:5555'}"
        )
    match = _TCP.match("tcp://" + rest)
    if not match:
        raise EndpointError(f"{text!r} is not of the form tcp://host:port (e.g. {DEFAULT_ENDPOINT})")
    host = match["host"].strip("[]")
    if not host:
        raise EndpointError(f"{text!r} has no host; use e.g. {DEFAULT_ENDPOINT}")
    if host != "*" and not _valid_host(host):
        raise EndpointError(f"{text!r}: {host!r} is not a valid host name or IP address")
    if host == "*" and not for_bind:
        raise EndpointError(f"{text!r}: '*' can only be bound; connect to a host, e.g. {DEFAULT_ENDPOINT}")
    port_text = match["port"]
    if port_text is None or port_text == "":
        raise EndpointError(f"{text!r} has no port; add one, e.g. tcp://{match['host']}:{DEFAULT_PORT}")
    if port_text == "*":
        if not for_bind:
            raise EndpointError(f"{text!r}: a client needs the server's real port number, not '*'")
        return Endpoint(host, None)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise EndpointError(f"{text!r}: the port must be a number from 1 to 65535, got {port_text!r}")
    return Endpoint(host, int(port_text))


def check_bind_allowed(endpoint: Endpoint, *, allow_remote: bool, authenticated: bool = False) -> None:
    """Refuse addresses other machines could reach unless clients authenticate or the user opted in."""
    if endpoint.is_loopback or allow_remote or authenticated:
        return
    port = DEFAULT_PORT if endpoint.port is None else endpoint.port
    raise EndpointError(
        f"refusing to listen on {endpoint.url}: other machines could reach it, and without authentication "
        "anyone there could use the server. Serve only known clients with CURVE keys "
        "(`seethrough keys create`, then --server-key and --client-keys; see docs/server.md), or listen on "
        f"tcp://127.0.0.1:{port} (the default) and reach it through an SSH tunnel "
        f"(ssh -L {port}:127.0.0.1:{port} this-host), or pass --allow-remote if you trust everyone on "
        "that network."
    )


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))
