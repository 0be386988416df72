"""Which listen addresses only this machine can reach.

Standard library only: ``samr1 view`` checks its ``--host`` with it, and the viewer must start without torch
(or a web framework) being imported; ``samr1 serve`` uses the same rule.
"""

from __future__ import annotations

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
