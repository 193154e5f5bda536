"""The lab's network: one bridge, one namespace + veth per node, NAT to the mirror.

Each `ensure_*` is idempotent and returns whether it changed anything, so a
second `kiln lab up` can say "nothing changed" truthfully.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from kiln.errors import KilnError, UsageError
from kiln.hostcmd import run, succeeds
from kiln.lab.layout import LabLayout
from kiln.paths import state_root

_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def links() -> list[str]:
    """Names of all links in the host's namespace."""
    return [link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout)]


def namespaces() -> list[str]:
    """Names of all named network namespaces."""
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [ns["name"] for ns in json.loads(out)] if out else []


def check_subnet_free(layout: LabLayout, subnet: ipaddress.IPv4Network) -> None:
    """Refuse a subnet that overlaps anything this host already has, but this lab's bridge."""
    conflicts = subnet_conflicts(layout, subnet)
    if conflicts:
        raise UsageError(f"kiln:cluster.lab.subnet: {conflicts[0]}")


def subnet_conflicts(layout: LabLayout, subnet: ipaddress.IPv4Network) -> list[str]:
    """Why `subnet` would collide with this host's network: an address or a route
    already on another interface. Checked before any bridge is made (`kiln lab up`)
    and by `kiln config check` on the lab host: a lab bridge on a subnet the host
    already uses would take its traffic and could cut the host off its network.
    The default route overlaps everything and is left out; so is the lab's own bridge
    (a lab that is already up)."""
    found = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout):
        if entry.get("ifname") == layout.bridge:
            continue
        for info in entry.get("addr_info", []):
            net = ipaddress.IPv4Interface(f"{info['local']}/{info.get('prefixlen', 32)}").network
            if net.overlaps(subnet):
                found.append(
                    f"{subnet} overlaps {info['local']}/{info.get('prefixlen', 32)} on "
                    f"{entry.get('ifname')}: choose another private /24"
                )
    for route in json.loads(run(["ip", "-j", "-4", "route", "show"]).stdout):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == layout.bridge:
            continue
        net = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        if net.overlaps(subnet):
            found.append(
                f"{subnet} overlaps the route to {net} on {route.get('dev')}: "
                "choose another private /24"
            )
    return found


def ensure_ip_forward() -> bool:
    """NAT needs forwarding; remember the original value so the last lab down restores it."""
    if _IP_FORWARD.read_text().strip() == "1":
        return False
    saved = state_root() / "ip_forward.orig"
    saved.parent.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        saved.write_text("0\n")
    _IP_FORWARD.write_text("1\n")
    return True


def restore_ip_forward_if_last() -> None:
    """Put ip_forward back once no lab bridge is left."""
    saved = state_root() / "ip_forward.orig"
    if not saved.exists() or any(n.startswith("kl-") and n.endswith("-br") for n in links()):
        return
    _IP_FORWARD.write_text(saved.read_text())
    saved.unlink()


def ensure_bridge(layout: LabLayout, gateway: ipaddress.IPv4Address, prefixlen: int) -> bool:
    changed = False
    if layout.bridge not in links():
        run(["ip", "link", "add", layout.bridge, "type", "bridge"])
        changed = True
    addrs = json.loads(run(["ip", "-j", "-4", "addr", "show", "dev", layout.bridge]).stdout)
    present = {a["local"] for entry in addrs for a in entry.get("addr_info", [])}
    if str(gateway) not in present:
        run(["ip", "addr", "add", f"{gateway}/{prefixlen}", "dev", layout.bridge])
        changed = True
    if not _is_up(layout.bridge):
        run(["ip", "link", "set", layout.bridge, "up"])
        changed = True
    return changed


def _nat_rules(layout: LabLayout, subnet: ipaddress.IPv4Network) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", layout.rule_tag]
    br = layout.bridge
    return [
        ["-t", "nat", "POSTROUTING", "-s", str(subnet), "!", "-o", br, *tag, "-j", "MASQUERADE"],
        # Hosts whose FORWARD policy is DROP (Docker hosts) would otherwise cut nodes off.
        ["-t", "filter", "FORWARD", "-i", br, *tag, "-j", "ACCEPT"],
        [
            "-t",
            "filter",
            "FORWARD",
            "-o",
            br,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            *tag,
            "-j",
            "ACCEPT",
        ],
    ]


def ensure_nat(layout: LabLayout, subnet: ipaddress.IPv4Network) -> bool:
    changed = False
    for table_flag, table, chain, *spec in _nat_rules(layout, subnet):
        if not succeeds(["iptables", table_flag, table, "-C", chain, *spec]):
            run(["iptables", table_flag, table, "-I", chain, "1", *spec])
            changed = True
    return changed


def tagged_rules(layout: LabLayout) -> list[tuple[str, list[str]]]:
    """(table, rule args) of every iptables rule carrying this lab's tag."""
    found = []
    for table in ("nat", "filter"):
        for line in run(["iptables", "-t", table, "-S"]).stdout.splitlines():
            if f'--comment "{layout.rule_tag}"' in line or f"--comment {layout.rule_tag} " in line:
                found.append((table, line.split()))
    return found


def remove_rules(layout: LabLayout) -> bool:
    rules = tagged_rules(layout)
    for table, words in rules:
        # `-S` prints "-A CHAIN spec..."; deleting is the same spec with -D.
        args = [w.strip('"') for w in words[1:]]
        run(["iptables", "-t", table, "-D", *args])
    return bool(rules)


def ensure_node_link(
    layout: LabLayout,
    node: str,
    address: ipaddress.IPv4Address,
    gateway: ipaddress.IPv4Address,
    prefixlen: int,
) -> bool:
    """A namespace for `node` with eth0 on the bridge, its address and a default route."""
    ns, veth = layout.netns(node), layout.veth(node)
    changed = False
    if ns not in namespaces():
        run(["ip", "netns", "add", ns])
        changed = True
    if veth not in links():
        # A stale eth0 would block creating the peer; it can only be ours.
        run(["ip", "-n", ns, "link", "del", "eth0"], check=False)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        changed = True
    if _master(veth) != layout.bridge:
        run(["ip", "link", "set", veth, "master", layout.bridge])
        changed = True
    if not _is_up(veth):
        run(["ip", "link", "set", veth, "up"])
        changed = True
    inner = json.loads(run(["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", "eth0"]).stdout)
    if str(address) not in {a["local"] for e in inner for a in e.get("addr_info", [])}:
        run(["ip", "-n", ns, "addr", "flush", "dev", "eth0"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
        changed = True
    for dev in ("lo", "eth0"):
        if not _is_up(dev, ns):
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            changed = True
    routes = json.loads(run(["ip", "-n", ns, "-j", "-4", "route", "show", "default"]).stdout)
    if not any(r.get("gateway") == str(gateway) for r in routes):
        run(["ip", "-n", ns, "route", "replace", "default", "via", str(gateway)])
        changed = True
    return changed


def remove_node_link(layout: LabLayout, node: str) -> None:
    if layout.netns(node) in namespaces():
        run(["ip", "netns", "del", layout.netns(node)])
    if layout.veth(node) in links():
        _delete_link(layout.veth(node))


def remove_lab_links(layout: LabLayout) -> bool:
    """Delete every namespace and link of this lab, including leftovers of old configs."""
    gone = False
    for ns in namespaces():
        if ns.startswith(layout.netns_prefix):
            run(["ip", "netns", "del", ns])
            gone = True
    for name in links():
        if layout.link_pattern.match(name):
            _delete_link(name)
            gone = True
    return gone


def _delete_link(name: str) -> None:
    # Deleting a namespace takes its veth pairs with it, asynchronously: the
    # host end may vanish between listing and deleting, which is fine.
    result = run(["ip", "link", "del", name], check=False)
    if result.returncode != 0 and name in links():
        raise KilnError(f"could not delete link {name}: {result.stderr.strip()}")


def _is_up(dev: str, ns: str | None = None) -> bool:
    cmd = ["ip", *(["-n", ns] if ns else []), "-j", "link", "show", "dev", dev]
    info = json.loads(run(cmd).stdout)
    return bool(info) and "UP" in info[0].get("flags", [])


def _master(dev: str) -> str | None:
    info = json.loads(run(["ip", "-j", "link", "show", "dev", dev]).stdout)
    return info[0].get("master") if info else None
