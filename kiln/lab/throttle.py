"""Slow one lab node's link down, both ways, with `tc tbf` (netem does not exist here).

Certification tests and bench/certify.py use it to make a known node slow and
check that certification names that node and no other. The qdisc sits on the
host end of the node's veth (traffic to the node) and on the node's eth0 in
its namespace (traffic from it); deleting the veth or the namespace (`kiln lab
down`) removes both.
"""

from __future__ import annotations

from kiln.hostcmd import run
from kiln.lab.layout import LabLayout

# tbf refills its bucket every timer tick: at Gbit/s rates a small burst caps the
# rate far below the configured one (64kb at 3000mbit gave a twentieth of it).
# A burst of one tick's worth of bytes (rate / 250 Hz) gets close to the rate.
_TICKS_PER_SECOND = 250


def _burst_bytes(rate_mbit: int) -> int:
    return max(64 * 1024, rate_mbit * 1_000_000 // 8 // _TICKS_PER_SECOND)


def _devices(layout: LabLayout, node: str) -> list[list[str]]:
    """`tc` argument prefixes for both ends of the node's link."""
    return [
        ["tc", "qdisc", "{op}", "dev", layout.veth(node)],
        ["ip", "netns", "exec", layout.netns(node), "tc", "qdisc", "{op}", "dev", "eth0"],
    ]


def throttle(layout: LabLayout, node: str, rate_mbit: int) -> None:
    """Cap `node`'s link at `rate_mbit` in both directions (replacing any earlier cap)."""
    burst = _burst_bytes(rate_mbit)
    for prefix in _devices(layout, node):
        argv = [part.replace("{op}", "replace") for part in prefix]
        run([*argv, "root", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
             "latency", "50ms"])  # fmt: skip


def unthrottle(layout: LabLayout, node: str) -> None:
    """Remove the cap (nothing to do when there is none)."""
    for prefix in _devices(layout, node):
        argv = [part.replace("{op}", "del") for part in prefix]
        run([*argv, "root"], check=False)
