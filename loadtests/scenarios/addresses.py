"""Simulated client addresses, sent as ``X-Forwarded-For``.

The service counts its per-address rate limits (login 30/minute by default) per client
address. Every Locust user connects from 127.0.0.1, so without a simulated address the
whole load would be one client and the limits would refuse most of it. The runner's
service (``--start-service``) trusts 127.0.0.1 as a proxy, so it believes the header and
counts each simulated person apart, as it does behind the ingress in production.

The addresses come from 198.18.0.0/15, which RFC 2544 reserves for benchmarking: never
routed on the internet, so a service log line naming one is plainly load-test traffic.
People (the legitimate classes) get 198.18.0.0/16; attackers get 198.19.0.0/16, so
``rate_limited`` events can be told apart by address alone.

No Locust import here: the unit tests use it without gevent's monkey-patching.
"""

from __future__ import annotations

import ipaddress
import random

HEADER = "X-Forwarded-For"

PEOPLE = ipaddress.IPv4Network("198.18.0.0/16")
# A credential stuffer rotating through a fixed pool of proxies or bots.
STUFFERS = ipaddress.IPv4Network("198.19.0.0/17")
# A password sprayer on a botnet: every attempt from another address.
SPRAYERS = ipaddress.IPv4Network("198.19.128.0/17")


def hosts(network: ipaddress.IPv4Network) -> int:
    """How many usable addresses ``network`` has (without its network and broadcast address)."""
    return network.num_addresses - 2


def random_address(network: ipaddress.IPv4Network, rng: random.Random | None = None) -> str:
    """Any usable address of ``network``: a new person (or bot) each call."""
    index = (rng or random).randint(1, hosts(network))
    return str(network[index])


def address_pool(network: ipaddress.IPv4Network, size: int) -> list[str]:
    """The first ``size`` usable addresses of ``network``: the same pool on every Locust
    worker, so a distributed run has ``size`` attacking addresses, not ``size`` per worker."""
    if not 1 <= size <= hosts(network):
        raise ValueError(f"an address pool of {network} holds 1 to {hosts(network)} addresses, not {size}")
    return [str(network[index]) for index in range(1, size + 1)]
