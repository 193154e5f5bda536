"""Put kiln.prom into node_exporter's textfile directory on every host.

Dashboards and alert rules then see the certification status and its age
(`kiln_certification_timestamp_seconds`; the prometheus role alerts on a
failing or stale certification). Written to a dot-file in the same directory
and renamed, so the collector, which reads only whole `*.prom` files, never
sees half of one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kiln import role_defaults, ssh
from kiln.inventory import Access

TEXTFILE_NAME = "kiln-certification.prom"


def publish_one(target: ssh.SshTarget, data: bytes, directory: str) -> str | None:
    """Copy `data` to one host; the problem in one line, or None."""
    final = f"{directory}/{TEXTFILE_NAME}"
    temp = f"{directory}/.{TEXTFILE_NAME}.tmp"
    try:
        with ssh.connect(target, timeout=20) as client, client.open_sftp() as sftp:
            with sftp.open(temp, "wb") as handle:
                handle.write(data)
            sftp.chmod(temp, 0o644)
            sftp.posix_rename(temp, final)
    except Exception as exc:  # noqa: BLE001 - reported per host; the verdict stands
        return f"{target.name}: {exc}"
    return None


def publish_textfile(access: Access, path: Path, directory: str | None = None) -> list[str]:
    """Copy `path` to every host; the problems, one line per host that failed."""
    data = path.read_bytes()
    directory = directory or role_defaults.node_exporter_textfile_dir()
    targets = list(access.targets.values())
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(targets)))) as pool:
        results = pool.map(lambda t: publish_one(t, data, directory), targets)
    return [r for r in results if r]
