"""Who can reach the metrics: where node_exporter, dcgm-exporter and Prometheus listen, and
the TLS and basic auth of their web config files.

Listening: every host binds them to its management address (`kiln_management_address`
in the inventory): its own address inside the stack's `managementNetwork`, read from its
facts (`ansible_all_ipv4_addresses`), or its address in the stack when there is no
management network or that address is already inside it. The roles' listen addresses
default to it, and Prometheus scrapes every target there.

TLS and basic auth (`monitoring.tls`, `monitoring.basicAuth`) reach the roles as secret
extra vars only, like the munge key (`kiln.secrets.provision_vars`): the bcrypt hash of the
password for the web config files, the clear password for Prometheus' scrapes, and the PEM
certificate and key read from this machine. The hash's salt is derived from the cluster
name and the user, so the same password always gives the same file (a re-run changes
nothing) and a new password gives a new one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bcrypt
from pydantic import SecretStr

from kiln import redact
from kiln.config import Cluster, Host
from kiln.errors import UsageError

#: The roles that serve metrics through an exporter-toolkit web config file.
WEB_ROLES = ("node_exporter", "prometheus", "dcgm_exporter")
#: bcrypt work factor of the password hash (exporter-toolkit caches verified logins).
BCRYPT_COST = 12
#: bcrypt reads at most this many bytes of a password; the library refuses longer ones.
MAX_PASSWORD_BYTES = 72
_AUTH = "kiln:cluster.monitoring.basicAuth"
_TLS = "kiln:cluster.monitoring.tls"

# An IPv4 host's own address inside the management network, from its facts; "" when it
# has none there (the roles then stop, naming the host). Plain Jinja: no netaddr needed.
_ADDRESS_FROM_FACTS = (
    "{%- set ns = namespace(found='') -%}"
    "{%- for ip in ansible_all_ipv4_addresses | default([]) -%}"
    "{%- set o = ip.split('.') | map('int') | list -%}"
    "{%- if not ns.found and (o[0] * 16777216 + o[1] * 65536 + o[2] * 256 + o[3])"
    " // BLOCK == INDEX -%}{%- set ns.found = ip -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{ ns.found }}"
)


def management_address(cluster: Cluster, host: Host) -> str:
    """The inventory's `kiln_management_address` of `host`: an address, or (when only the
    host's facts can tell) a template that picks its address inside the network."""
    network = cluster.management_network
    if network is None or (host.address is not None and host.address in network):
        return str(host.address)
    block = network.num_addresses
    return _ADDRESS_FROM_FACTS.replace("BLOCK", str(block)).replace(
        "INDEX", str(int(network.network_address) // block)
    )


def inventory_vars(cluster: Cluster) -> dict[str, Any]:
    """What every host's inventory says about the exposure of the metrics (no secrets)."""
    auth = cluster.monitoring.basic_auth
    return {
        "kiln_management_network": str(cluster.management_network or ""),
        "prometheus_scrape_scheme": "https" if cluster.monitoring.tls else "http",
        "prometheus_scrape_basic_auth_user": auth.user if auth else "",
    }


#: Secret extra vars `provision_vars` makes; a caller that brings one brings them all.
SECRET_KEYS = frozenset(
    [f"{role}_web_basic_auth_users" for role in WEB_ROLES]
    + [f"{role}_web_tls_certificate" for role in WEB_ROLES]
    + [f"{role}_web_tls_key" for role in WEB_ROLES]
    + ["prometheus_scrape_basic_auth_password", "prometheus_scrape_ca_certificate"]
)


def provision_vars(cluster: Cluster, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The secret extra vars of the stack's basic auth and TLS (none when both are off, or
    when `given` already carries them: the Pulumi program computes them where it can
    decrypt the password)."""
    if SECRET_KEYS & set(given or {}):
        return {}
    variables: dict[str, Any] = {}
    auth = cluster.monitoring.basic_auth
    if auth is not None:
        password = basic_auth_password(cluster)
        users = {auth.user: password_hash(cluster.name, auth.user, password)}
        variables.update({f"{role}_web_basic_auth_users": users for role in WEB_ROLES})
        variables["prometheus_scrape_basic_auth_password"] = password
    tls = cluster.monitoring.tls
    if tls is not None:
        certificate = _read_pem(tls.certificate_file, "certificateFile", "CERTIFICATE-----")
        key = _read_pem(tls.key_file, "keyFile", "PRIVATE KEY-----")
        redact.register(key)
        for role in WEB_ROLES:
            variables[f"{role}_web_tls_certificate"] = certificate
            variables[f"{role}_web_tls_key"] = key
        # One certificate on every host: it is also what Prometheus verifies them against.
        variables["prometheus_scrape_ca_certificate"] = certificate
    return variables


def basic_auth_password(cluster: Cluster) -> str:
    """The basic auth password: the clear `password`, else the content of `passwordFile`."""
    auth = cluster.monitoring.basic_auth
    if auth is None:
        raise UsageError(f"{_AUTH}: not set")
    if isinstance(auth.password, SecretStr):
        password = auth.password.get_secret_value()
        where = f"{_AUTH}.password"
    elif auth.password_file:
        where = f"{_AUTH}.passwordFile"
        try:
            password = Path(auth.password_file).expanduser().read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{where}: cannot read {auth.password_file} "
                f"({getattr(exc, 'strerror', None) or type(exc).__name__})"
            ) from None
    else:
        raise UsageError(
            f"{_AUTH}.passwordFile: missing: the CLI needs the password in a file (password "
            "is a Pulumi secret only `pulumi up` can decrypt); both may be set, each tool uses "
            "its own"
        )
    redact.register(password)
    problem = password_problem(password)
    if problem:
        raise UsageError(f"{where}: {problem}")
    return password


def password_problem(password: str) -> str | None:
    """Why `password` cannot be a basic auth password, or None. Never echoes it."""
    if not password:
        return "the password is empty"
    if "\n" in password or "\r" in password:
        return "the password must be one line"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"the password is longer than bcrypt's {MAX_PASSWORD_BYTES} bytes"
    return None


@functools.cache
def password_hash(cluster_name: str, user: str, password: str) -> str:
    """bcrypt hash of `password` with a salt derived from the cluster and user: the same
    inputs always give the same hash, so the web config files change only with them."""
    seed = hashlib.sha256(f"kiln basic auth\0{cluster_name}\0{user}".encode()).digest()[:16]
    # bcrypt's base64 is the standard one over another alphabet, without padding.
    salt22 = base64.b64encode(seed).rstrip(b"=").translate(_TO_BCRYPT_ALPHABET)
    salt = b"$2b$%02d$" % BCRYPT_COST + salt22
    hashed = bcrypt.hashpw(password.encode(), salt).decode("ascii")
    redact.register(hashed)
    return hashed


_TO_BCRYPT_ALPHABET = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
)


def _read_pem(name: str, key: str, marker: str) -> str:
    """A PEM file named by `monitoring.tls.<key>`; its content is never echoed."""
    where = f"{_TLS}.{key}"
    try:
        text = Path(name).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{where}: cannot read {name} ({getattr(exc, 'strerror', None) or type(exc).__name__})"
        ) from None
    if marker not in text:
        raise UsageError(f"{where}: {name} is not a PEM file with a {marker.rstrip('-')}")
    return text if text.endswith("\n") else text + "\n"
