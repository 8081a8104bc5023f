"""The address range a bidder's connection comes from, for diversity in selection (issue 7).

Two executors of one job should not sit in the same /24 (IPv4) or /48 (IPv6): peers there are
likely one operator, whose colluding results could make a quorum. The submitter takes the address
from the connection a bid arrived on, never from what the bidder says about itself.

Pure: `ipaddress` only.
"""

from __future__ import annotations

import ipaddress

IPV4_PREFIX = 24
IPV6_PREFIX = 48


def subnet_of(ip: str | None) -> str | None:
    """"192.0.2.0/24" for 192.0.2.7, "2001:db8:1::/48" for 2001:db8:1:2::3; an IPv4-mapped IPv6
    address counts as its IPv4 address. None for None or anything that is not an IP address
    (unknown: such a bidder conflicts with nobody)."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
