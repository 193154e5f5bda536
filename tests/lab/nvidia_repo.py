"""A signed, flat apt repository of stand-ins for NVIDIA's packages, served over HTTP.

GPU roles install NVIDIA's packages from a flat apt repository (`deb <url> /`):
NVIDIA's CUDA network repository, or an air-gapped site's mirror of it. Lab
machines have no GPUs and no Internet, so lab tests point the roles at this
"site mirror" instead: packages with NVIDIA's names and version strings (epochs,
`+cuda12.4` suffixes, a fabric manager newer than any driver) that real apt and
dpkg resolve, verify and install, but that ship only a README and, where the
real package has one, a systemd unit. No binary is shipped: nothing here may
pass for nvidia-smi or dcgmi.

Built only with Debian's own tools (dpkg-deb, dpkg-scanpackages, gpg), so what
apt accepts here it would accept from a real mirror built the same way; the
Release file is written here to need no apt-utils.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Upstream versions, as a stack pins them; `*_DEB` are the full Debian versions
# that apt and dpkg report for the packages built from them.
DRIVER_BRANCH = "580"
DRIVER = "580.95.05"
DRIVER_NEWER = "580.105.08"  # same branch, newer: what an unpinned upgrade would take
DRIVER_OTHER_BRANCH = "575"
DRIVER_OTHER = "575.57.08"
FABRICMANAGER_NEWEST = "580.126.09"  # newer than any driver: the mismatch hazard
NCCL = "2.21.5"
NCCL_OTHER = "2.23.4"  # built for CUDA_OTHER only, as NVIDIA's repository has it
CUDA = "12.4"
CUDA_OTHER = "12.6"
CUDA_TOOLKIT = "12.4.1"
CUDA_TOOLKIT_OTHER = "12.6.3"
DCGM = "4.2.3"
DCGM_NEWER = "4.4.1"
DCGM_EXPORTER = "4.2.3-4.1.1"  # DCGM version, then the exporter's own
DCGM_EXPORTER_NEWER = "4.4.1-4.5.0"
CONTAINER_TOOLKIT = "1.17.8"
CONTAINER_TOOLKIT_NEWER = "1.18.0"

DRIVER_DEB = f"{DRIVER}-1"
DRIVER_NEWER_DEB = f"{DRIVER_NEWER}-1"
DRIVER_OTHER_DEB = f"{DRIVER_OTHER}-1"
FABRICMANAGER_NEWEST_DEB = f"{FABRICMANAGER_NEWEST}-1"
CUDA_TOOLKIT_DEB = f"{CUDA_TOOLKIT}-1"
CUDA_TOOLKIT_OTHER_DEB = f"{CUDA_TOOLKIT_OTHER}-1"
DCGM_DEB = f"1:{DCGM}-1"  # NVIDIA's DCGM 4 packages carry epoch 1
DCGM_NEWER_DEB = f"1:{DCGM_NEWER}-1"
DCGM_EXPORTER_DEB = f"{DCGM_EXPORTER}-1"
DCGM_EXPORTER_NEWER_DEB = f"{DCGM_EXPORTER_NEWER}-1"
CONTAINER_TOOLKIT_DEB = f"{CONTAINER_TOOLKIT}-1"
CONTAINER_TOOLKIT_NEWER_DEB = f"{CONTAINER_TOOLKIT_NEWER}-1"
HEADERS_DEB = "1.0-1"

KEY_NAME = "kiln-test-repo.asc"
ARCH = "amd64"
# File times inside the .debs, so that two builds of a package differ only where
# they must (the signatures, the Release date).
_EPOCH = 1_700_000_000


def nccl_deb(nccl: str = NCCL, cuda: str = CUDA) -> str:
    """NCCL's Debian version as NVIDIA spells it: one build per CUDA minor, `2.21.5-1+cuda12.4`."""
    return f"{nccl}-1+cuda{cuda}"


@dataclass(frozen=True)
class FakePackage:
    """One binary package of the repository.

    `files` maps absolute paths on the target to their text (installed 0644);
    `control` holds further control fields (Conflicts, Provides, ...), for
    packages that must exclude each other as the real ones do.
    """

    name: str
    version: str
    files: Mapping[str, str] = field(default_factory=dict)
    depends: str = ""
    description: str = "Kiln test stand-in"
    control: Mapping[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """`<name>_<version>_amd64.deb`, the epoch left out as Debian does: no ':' in file names."""
        return f"{self.name}_{self.version.partition(':')[2] or self.version}_{ARCH}.deb"


def _unit(description: str, exec_start: str, service_type: str, **service: str) -> str:
    lines = ["[Unit]", f"Description={description}", "", "[Service]", f"Type={service_type}"]
    lines += [f"{key}={value}" for key, value in service.items()]
    lines += [f"ExecStart={exec_start}", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


PERSISTENCED_UNIT = _unit(
    "NVIDIA Persistence Daemon (Kiln test stand-in)",
    "/usr/bin/nvidia-persistenced --user root",
    "forking",
)
FABRICMANAGER_UNIT = _unit(
    "NVIDIA fabric manager service (Kiln test stand-in)",
    "/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg",
    "forking",
    TimeoutStartSec="240",
)
DCGM_UNIT = _unit(
    "NVIDIA DCGM service (Kiln test stand-in)",
    "/usr/bin/nv-hostengine -n --service-account nvidia-dcgm",
    "simple",
    Restart="on-abort",
)


def nvidia_like_packages(kernel: str) -> list[FakePackage]:
    """The package set the GPU role tests install from.

    Several versions of most packages, so that tests can tell a pinned install
    from apt's newest-wins default. `kernel` names the headers package
    (`linux-headers-<kernel>`) the driver role wants: lab nodes share the
    host's kernel, so pass `uname -r`.
    """
    persistenced = {"/lib/systemd/system/nvidia-persistenced.service": PERSISTENCED_UNIT}
    # Two driver branches ship the same files; like the real ones they conflict,
    # so that apt replaces one branch by the other instead of dpkg failing.
    driver_control = {
        "Provides": "nvidia-driver-binary",
        "Conflicts": "nvidia-driver-binary",
        "Replaces": "nvidia-driver-binary",
    }
    packages = [
        FakePackage(f"nvidia-driver-{DRIVER_BRANCH}", v, persistenced, control=driver_control)
        for v in (DRIVER_DEB, DRIVER_NEWER_DEB)
    ]
    packages.append(
        FakePackage(
            f"nvidia-driver-{DRIVER_OTHER_BRANCH}",
            DRIVER_OTHER_DEB,
            persistenced,
            control=driver_control,
        )
    )
    fabricmanager = {"/lib/systemd/system/nvidia-fabricmanager.service": FABRICMANAGER_UNIT}
    packages += [
        FakePackage(f"nvidia-fabricmanager-{DRIVER_BRANCH}", v, fabricmanager)
        for v in (DRIVER_DEB, DRIVER_NEWER_DEB, FABRICMANAGER_NEWEST_DEB)
    ]
    for version in (
        nccl_deb(NCCL, CUDA),
        nccl_deb(NCCL, CUDA_OTHER),
        nccl_deb(NCCL_OTHER, CUDA_OTHER),
    ):
        packages.append(FakePackage("libnccl2", version))
        packages.append(FakePackage("libnccl-dev", version, depends=f"libnccl2 (= {version})"))
    packages.append(FakePackage(f"cuda-toolkit-{CUDA.replace('.', '-')}", CUDA_TOOLKIT_DEB))
    packages.append(
        FakePackage(f"cuda-toolkit-{CUDA_OTHER.replace('.', '-')}", CUDA_TOOLKIT_OTHER_DEB)
    )
    dcgm = {"/lib/systemd/system/nvidia-dcgm.service": DCGM_UNIT}
    packages += [
        FakePackage("datacenter-gpu-manager-4-core", v, dcgm) for v in (DCGM_DEB, DCGM_NEWER_DEB)
    ]
    packages += [
        FakePackage("datacenter-gpu-manager-exporter", v, depends="datacenter-gpu-manager-4-core")
        for v in (DCGM_EXPORTER_DEB, DCGM_EXPORTER_NEWER_DEB)
    ]
    packages += [
        FakePackage("nvidia-container-toolkit", v)
        for v in (CONTAINER_TOOLKIT_DEB, CONTAINER_TOOLKIT_NEWER_DEB)
    ]
    packages.append(FakePackage(f"linux-headers-{kernel}", HEADERS_DEB))
    return packages


@dataclass(frozen=True)
class Repo:
    """A built repository: serve `root`; nodes verify it with `key_file`."""

    root: Path
    key_file: Path  # the armored public key (also served at <url>/kiln-test-repo.asc)


def build_repo(root: Path, packages: Iterable[FakePackage]) -> Repo:
    """Build the .debs, Packages, Release and its signatures under `root` (absent or empty).

    Signed with a throwaway key made for this build (nodes trust only the key
    file of their own repository, with `signed-by`), whose gpg home and agent
    are gone when this returns. Under a second for `nvidia_like_packages`.
    """
    packages = list(packages)
    _check_unique(packages)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ValueError(f"{root} is not empty: a repository is built into a fresh directory")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(_EPOCH), "LC_ALL": "C"}
    with (
        tempfile.TemporaryDirectory(prefix="kiln-repo-build-") as build,
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
    ):
        list(pool.map(lambda p: _build_deb(p, Path(build), root, env), packages))
    scan = _run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=root, env=env)
    index = scan.stdout.encode()
    (root / "Packages").write_bytes(index)
    (root / "Packages.gz").write_bytes(gzip.compress(index, mtime=0))
    (root / "Release").write_text(_release(root, ["Packages", "Packages.gz"]))
    key_file = root / KEY_NAME
    _sign(root, key_file, env)
    return Repo(root=root, key_file=key_file)


def _check_unique(packages: list[FakePackage]) -> None:
    seen: set[str] = set()
    for package in packages:
        if package.filename in seen:
            raise ValueError(f"two packages would be {package.filename}")
        seen.add(package.filename)


def _build_deb(package: FakePackage, build: Path, root: Path, env: Mapping[str, str]) -> None:
    tree = build / package.filename.removesuffix(".deb")
    files = {
        f"/usr/share/doc/{package.name}/README.kiln": (
            f"{package.name} {package.version}: a Kiln test stand-in, not NVIDIA's package.\n"
        ),
        **package.files,
    }
    size = 0
    for target, text in files.items():
        if not target.startswith("/"):
            raise ValueError(f"{package.name}: {target} is not an absolute path")
        path = tree / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        size += len(text.encode())
    fields = {
        "Package": package.name,
        "Version": package.version,
        "Architecture": ARCH,
        "Maintainer": "Kiln tests <kiln-tests@invalid>",
        "Installed-Size": str(max(1, -(-size // 1024))),
        "Depends": package.depends,
        **package.control,
        "Section": "misc",
        "Priority": "optional",
        "Description": package.description,
    }
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "".join(f"{key}: {value}\n" for key, value in fields.items() if value)
    )
    for directory, dirs, names in os.walk(tree):
        os.chmod(directory, 0o755)
        for name in names:
            os.chmod(os.path.join(directory, name), 0o644)
        for name in [*dirs, *names, "."]:
            os.utime(os.path.join(directory, name), (_EPOCH, _EPOCH))
    _run(
        [
            "dpkg-deb",
            "--root-owner-group",
            "-Zgzip",
            "--build",
            str(tree),
            str(root / package.filename),
        ],
        env=env,
    )


def _release(root: Path, names: list[str]) -> str:
    contents = {name: (root / name).read_bytes() for name in names}
    lines = [
        "Origin: Kiln",
        "Label: Kiln test NVIDIA-like repository",
        "Suite: kiln-test",
        "Codename: kiln-test",
        f"Date: {formatdate(usegmt=True)}",
        f"Architectures: {ARCH}",
        "Description: Stand-ins for NVIDIA's CUDA repository packages (Kiln tests)",
    ]
    for field_name, algorithm in (("MD5Sum", "md5"), ("SHA256", "sha256"), ("SHA512", "sha512")):
        lines.append(f"{field_name}:")
        for name, data in contents.items():
            lines.append(f" {hashlib.new(algorithm, data).hexdigest()} {len(data):>8} {name}")
    return "\n".join(lines) + "\n"


def _sign(root: Path, key_file: Path, env: Mapping[str, str]) -> None:
    # In /tmp, not under root: gpg-agent's socket path must stay short, and the
    # secret key must not be served.
    home = tempfile.mkdtemp(prefix="kiln-repo-gnupg-")
    gpg_env = {**env, "GNUPGHOME": home}
    gpg_env.pop("GPG_AGENT_INFO", None)
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        _run(
            [
                *gpg,
                "--quick-gen-key",
                "Kiln test repository <kiln-test-repo@invalid>",
                "ed25519",
                "sign",
                "never",
            ],
            env=gpg_env,
        )
        listing = _run(
            ["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=gpg_env
        ).stdout
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        key_file.write_text(_run([*gpg, "--armor", "--export", fingerprint], env=gpg_env).stdout)
        sign = [*gpg, "--yes", "--local-user", fingerprint, "--digest-algo", "SHA512"]
        release = str(root / "Release")
        _run([*sign, "--clearsign", "--output", str(root / "InRelease"), release], env=gpg_env)
        _run(
            [*sign, "--armor", "--detach-sign", "--output", str(root / "Release.gpg"), release],
            env=gpg_env,
        )
    finally:
        # The agent gpg started would otherwise outlive the test, holding a removed home.
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env=gpg_env, capture_output=True, check=False
        )
        subprocess.run(
            ["gpgconf", "--remove-socketdir"], env=gpg_env, capture_output=True, check=False
        )
        shutil.rmtree(home, ignore_errors=True)


def _run(
    command: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return result


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the address's FQDN: a DNS timeout on an
        # air-gapped host, for a name nothing here uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-transfer is no error of ours; anything else is.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


@contextmanager
def serve(root: Path, address: str, port: int = 0) -> Iterator[str]:
    """Serve root over HTTP on address (threaded http.server, quiet logging).

    Yields the base URL, ending in '/': `deb [signed-by=<key>] <url> /` is the
    source line, `<url>kiln-test-repo.asc` the key.

    Only `address` is bound, e.g. the lab bridge's address for lab nodes, so the
    repository is not offered on every interface of the host. Port 0 takes a free
    port. The server stops when the block ends.
    """
    ipv6 = ":" in address
    handler = functools.partial(_QuietHandler, directory=str(root))
    with (_Server6 if ipv6 else _Server)((address, port), handler) as server:
        thread = threading.Thread(target=server.serve_forever, name="kiln-nvidia-repo", daemon=True)
        thread.start()
        try:
            host = f"[{address}]" if ipv6 else address
            yield f"http://{host}:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()
