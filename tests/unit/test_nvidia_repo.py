"""The lab's NVIDIA-like apt repository is one real apt accepts: signed, complete, versioned.

Checked with this host's own apt, under a private configuration (no host
sources, keys, pins or proxies), against the repository served on loopback, so
a broken Release, signature or index fails here rather than as a confusing
role failure on a lab node.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import nvidia_repo as nr

pytestmark = pytest.mark.unit

KERNEL = platform.release()
TOOLS = ("apt-get", "apt-cache", "dpkg-deb", "dpkg-scanpackages", "gpg", "gpgv", "gpgconf")


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/setup")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> nr.Repo:
    return nr.build_repo(tmp_path_factory.mktemp("repo"), nr.nvidia_like_packages(KERNEL))


@pytest.fixture(scope="module")
def url(repo: nr.Repo) -> Iterator[str]:
    with nr.serve(repo.root, "127.0.0.1") as base:
        yield base


class Apt:
    """apt-get and apt-cache confined to one directory: its sources, state, cache, keys.

    `source` is a deb822 stanza, as roles/nvidia writes it.
    """

    def __init__(self, directory: Path, source: str) -> None:
        self.directory = directory
        etc = directory / "etc"
        for sub in ("apt.conf.d", "sources.list.d", "preferences.d", "trusted.gpg.d"):
            (etc / sub).mkdir(parents=True)
        for sub in ("state/lists/partial", "cache/archives/partial", "download"):
            (directory / sub).mkdir(parents=True)
        (directory / "status").write_text("")
        (etc / "sources.list").write_text("")
        (etc / "sources.list.d" / "nvidia.sources").write_text(source)
        # Read first (APT_CONFIG); pointing Dir::Etc here keeps the host's
        # apt.conf.d, sources, pins and trusted keys out.
        self.config = directory / "apt.conf"
        self.config.write_text(
            f'Dir::Etc "{etc}/";\n'
            f'Dir::State "{directory}/state/";\n'
            f'Dir::State::status "{directory}/status";\n'
            f'Dir::Cache "{directory}/cache/";\n'
            'APT::Architecture "amd64";\n'
            'APT::Architectures { "amd64"; };\n'
            # The private directories are not the _apt user's to write.
            'APT::Sandbox::User "root";\n'
        )
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        }
        self.env.update(APT_CONFIG=str(self.config), LC_ALL="C", DEBIAN_FRONTEND="noninteractive")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=self.directory / "download",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def update(self) -> subprocess.CompletedProcess[str]:
        return self.run("apt-get", "update")

    def madison(self, *packages: str) -> dict[str, list[str]]:
        result = self.run("apt-cache", "madison", *packages)
        assert result.returncode == 0, result.stderr
        versions: dict[str, list[str]] = {}
        for line in result.stdout.splitlines():
            name, version, _ = (part.strip() for part in line.split("|"))
            versions.setdefault(name, []).append(version)
        return versions

    def candidate(self, package: str) -> str:
        result = self.run("apt-cache", "policy", package)
        assert result.returncode == 0, result.stderr
        return next(
            line.split(":", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line.strip().startswith("Candidate:")
        )


def _apt(tmp_path: Path, url: str, key: Path) -> Apt:
    return Apt(tmp_path / "apt", f"Types: deb\nURIs: {url}\nSuites: /\nSigned-By: {key}\n")


@pytest.fixture(scope="module")
def apt(repo: nr.Repo, url: str, tmp_path_factory: pytest.TempPathFactory) -> Apt:
    apt = _apt(tmp_path_factory.mktemp("apt"), url, repo.key_file)
    result = apt.update()
    assert result.returncode == 0, result.stdout + result.stderr
    return apt


def test_apt_update_verifies_the_signature_without_complaint(
    repo: nr.Repo, url: str, tmp_path: Path
):
    apt = _apt(tmp_path, url, repo.key_file)
    result = apt.update()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Any W: (weak digest, missing field, unsigned) or E: is a repository a node would balk at.
    assert not [line for line in output.splitlines() if line[:2] in ("W:", "E:")], output
    assert "InRelease" in output
    lists = [p.name for p in (tmp_path / "apt" / "state" / "lists").iterdir()]
    assert any(name.endswith("_InRelease") for name in lists), lists
    assert any(name.endswith("_Packages") for name in lists), lists


def test_apt_refuses_the_repository_under_another_key(repo: nr.Repo, tmp_path: Path):
    # Same repository, but a key apt must not accept: a second build's.
    other = nr.build_repo(tmp_path / "other", [nr.FakePackage("kiln-other", "1.0-1")])
    with nr.serve(repo.root, "127.0.0.1") as base:
        result = _apt(tmp_path, base, other.key_file).update()
    output = result.stdout + result.stderr
    assert result.returncode != 0 or "E:" in output, output
    assert "NO_PUBKEY" in output or "is not signed" in output, output
    assert not list((tmp_path / "apt" / "state" / "lists").glob("*_Packages")), output


def test_apt_refuses_a_tampered_release(repo: nr.Repo, tmp_path: Path):
    tampered = tmp_path / "tampered"
    shutil.copytree(repo.root, tampered)
    inrelease = tampered / "InRelease"
    inrelease.write_text(inrelease.read_text().replace("Origin: Kiln", "Origin: Evil"))
    (tampered / "Release.gpg").unlink()
    with nr.serve(tampered, "127.0.0.1") as base:
        result = _apt(tmp_path, base, repo.key_file).update()
    output = result.stdout + result.stderr
    assert "BADSIG" in output, output
    assert not list((tmp_path / "apt" / "state" / "lists").glob("*_Packages")), output


def test_gpgv_verifies_both_signatures_with_the_served_key(repo: nr.Repo, url: str, tmp_path: Path):
    with urllib.request.urlopen(url + nr.KEY_NAME, timeout=10) as response:
        served = response.read()
    assert served == repo.key_file.read_bytes()
    assert served.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    keyring = tmp_path / "keyring.gpg"
    dearmor = subprocess.run(
        ["gpg", "--batch", "--dearmor", "--output", str(keyring), str(repo.key_file)],
        env={**os.environ, "GNUPGHOME": str(tmp_path)},
        capture_output=True,
        check=False,
    )
    assert dearmor.returncode == 0, dearmor.stderr
    for command in (
        ["gpgv", "--keyring", str(keyring), str(repo.root / "InRelease")],
        [
            "gpgv",
            "--keyring",
            str(keyring),
            str(repo.root / "Release.gpg"),
            str(repo.root / "Release"),
        ],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    signed = (repo.root / "InRelease").read_text()
    assert (repo.root / "Release").read_text() in signed


def test_every_package_version_is_offered(apt: Apt):
    expected: dict[str, set[str]] = {}
    for package in nr.nvidia_like_packages(KERNEL):
        expected.setdefault(package.name, set()).add(package.version)
    offered = apt.madison(*expected)
    assert {name: set(versions) for name, versions in offered.items()} == expected
    assert len(expected) == 11


@pytest.mark.parametrize(
    ("package", "versions"),
    [
        ("nvidia-driver-580", [nr.DRIVER_NEWER_DEB, nr.DRIVER_DEB]),
        ("nvidia-driver-575", [nr.DRIVER_OTHER_DEB]),
        (
            "nvidia-fabricmanager-580",
            [nr.FABRICMANAGER_NEWEST_DEB, nr.DRIVER_NEWER_DEB, nr.DRIVER_DEB],
        ),
        (
            "libnccl2",
            [
                nr.nccl_deb(nr.NCCL_OTHER, nr.CUDA_OTHER),
                nr.nccl_deb(nr.NCCL, nr.CUDA_OTHER),
                nr.nccl_deb(nr.NCCL, nr.CUDA),
            ],
        ),
        ("datacenter-gpu-manager-4-core", [nr.DCGM_NEWER_DEB, nr.DCGM_DEB]),
        ("datacenter-gpu-manager-exporter", [nr.DCGM_EXPORTER_NEWER_DEB, nr.DCGM_EXPORTER_DEB]),
        ("nvidia-container-toolkit", [nr.CONTAINER_TOOLKIT_NEWER_DEB, nr.CONTAINER_TOOLKIT_DEB]),
        (f"linux-headers-{KERNEL}", [nr.HEADERS_DEB]),
    ],
)
def test_apt_orders_versions_as_nvidia_numbers_them(apt: Apt, package: str, versions: list[str]):
    # madison lists newest first; the newest is what an unpinned install takes,
    # e.g. a fabric manager newer than the driver.
    assert apt.madison(package)[package] == versions
    assert apt.candidate(package) == versions[0]


def test_versions_are_the_constants(apt: Apt):
    assert nr.nccl_deb() == "2.21.5-1+cuda12.4"
    assert nr.DCGM_DEB == "1:4.2.3-1"
    assert apt.candidate("cuda-toolkit-12-4") == f"{nr.CUDA_TOOLKIT}-1"
    assert (
        apt.candidate(f"cuda-toolkit-{nr.CUDA_OTHER.replace('.', '-')}")
        == nr.CUDA_TOOLKIT_OTHER_DEB
    )
    assert nr.CUDA_TOOLKIT.startswith(nr.CUDA + ".")
    assert nr.FABRICMANAGER_NEWEST.split(".") > nr.DRIVER_NEWER.split(".")


def test_a_pinned_install_resolves_its_exact_dependency(apt: Apt):
    version = nr.nccl_deb(nr.NCCL, nr.CUDA)
    # As with NVIDIA's repository, pinning only the -dev package is not enough:
    # apt keeps the newest libnccl2 as candidate and cannot satisfy the `=`.
    alone = apt.run("apt-get", "install", "--simulate", f"libnccl-dev={version}")
    assert alone.returncode != 0, alone.stdout
    assert f"Depends: libnccl2 (= {version})" in alone.stdout, alone.stdout
    result = apt.run(
        "apt-get", "install", "--simulate", f"libnccl2={version}", f"libnccl-dev={version}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Inst libnccl2 ({version} " in result.stdout, result.stdout
    assert f"Inst libnccl-dev ({version} " in result.stdout, result.stdout

    result = apt.run("apt-get", "install", "--simulate", "datacenter-gpu-manager-exporter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Inst datacenter-gpu-manager-4-core ({nr.DCGM_NEWER_DEB} " in result.stdout


def test_driver_branches_replace_each_other(apt: Apt):
    # Each branch provides and conflicts with the same virtual package: one alone
    # installs, two together cannot.
    alone = apt.run("apt-get", "install", "--simulate", "nvidia-driver-580")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert f"Inst nvidia-driver-580 ({nr.DRIVER_NEWER_DEB} " in alone.stdout
    result = apt.run("apt-get", "install", "--simulate", "nvidia-driver-580", "nvidia-driver-575")
    assert result.returncode != 0, result.stdout
    assert (
        "nvidia-driver-binary" in result.stdout + result.stderr
        or "conflict" in (result.stdout + result.stderr).lower()
    ), result.stdout + result.stderr


def test_downloads_match_the_index_and_hold_only_stand_in_files(apt: Apt, repo: nr.Repo):
    """apt fetches each .deb by the index's file name and checks its hash; none ships a binary."""
    packages = nr.nvidia_like_packages(KERNEL)
    download = apt.directory / "download"
    result = apt.run("apt-get", "download", *(f"{p.name}={p.version}" for p in packages))
    assert result.returncode == 0, result.stdout + result.stderr
    # apt names a download after the full version, its epoch's ':' escaped.
    saved = {p.filename: f"{p.name}_{p.version.replace(':', '%3a')}_amd64.deb" for p in packages}
    assert sorted(p.name for p in download.iterdir()) == sorted(saved.values())
    for package in packages:
        deb = download / saved[package.filename]
        assert deb.read_bytes() == (repo.root / package.filename).read_bytes()
        fields = subprocess.run(
            ["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert fields == (
            f"Package: {package.name}\nVersion: {package.version}\nArchitecture: amd64\n"
        )
        tree = apt.directory / "x" / package.filename
        tree.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "--extract", str(deb), str(tree)], check=True)
        files = {
            "/" + str(path.relative_to(tree)): path for path in tree.rglob("*") if path.is_file()
        }
        readme = f"/usr/share/doc/{package.name}/README.kiln"
        assert set(files) == {readme, *package.files}
        assert f"{package.name} {package.version}" in files[readme].read_text()
        for target, path in files.items():
            assert path.stat().st_mode & 0o111 == 0, f"{package.filename}: {target} is executable"
            assert not target.startswith(("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/")), target
        for target, text in package.files.items():
            assert files[target].read_text() == text


def test_units_look_like_nvidias():
    units = {
        target: text
        for package in nr.nvidia_like_packages(KERNEL)
        for target, text in package.files.items()
    }
    assert set(units) == {
        "/lib/systemd/system/nvidia-persistenced.service",
        "/lib/systemd/system/nvidia-fabricmanager.service",
        "/lib/systemd/system/nvidia-dcgm.service",
    }
    persistenced = units["/lib/systemd/system/nvidia-persistenced.service"]
    assert "Description=NVIDIA Persistence Daemon (Kiln test stand-in)" in persistenced
    assert "Type=forking" in persistenced
    assert "ExecStart=/usr/bin/nvidia-persistenced --user root" in persistenced
    fabricmanager = units["/lib/systemd/system/nvidia-fabricmanager.service"]
    assert (
        "ExecStart=/usr/bin/nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg"
        in fabricmanager
    )
    assert "stand-in" in fabricmanager
    dcgm = units["/lib/systemd/system/nvidia-dcgm.service"]
    assert "ExecStart=/usr/bin/nv-hostengine -n --service-account nvidia-dcgm" in dcgm
    for text in units.values():
        assert text.rstrip().endswith("[Install]\nWantedBy=multi-user.target")


def test_build_leaves_no_gpg_home_or_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A short temporary directory of this test's own: gpg-agent's socket path is
    # limited, and other builds may run beside this one.
    scratch = Path(tempfile.mkdtemp(prefix="kiln-t-", dir="/tmp"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        nr.build_repo(tmp_path / "r", [nr.FakePackage("kiln-x", "1:2.0-1")])
        assert (tmp_path / "r" / "kiln-x_2.0-1_amd64.deb").is_file()
        assert not list(scratch.iterdir())
    finally:
        shutil.rmtree(scratch)
    agents = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"gpg-agent" in cmdline and str(scratch).encode() in cmdline:
            agents.append(cmdline.replace(b"\0", b" ").decode())
    assert not agents


def test_build_refuses_clashing_file_names_and_a_used_directory(tmp_path: Path):
    with pytest.raises(ValueError, match="two packages"):
        nr.build_repo(
            tmp_path / "a", [nr.FakePackage("p", "1:1.0-1"), nr.FakePackage("p", "1.0-1")]
        )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "stale.deb").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        nr.build_repo(tmp_path / "b", [nr.FakePackage("p", "1.0-1")])


def test_serve_stops_with_its_block(repo: nr.Repo):
    with nr.serve(repo.root, "127.0.0.1") as base:
        assert base.startswith("http://127.0.0.1:") and base.endswith("/")
        with urllib.request.urlopen(base + "Release", timeout=10) as response:
            assert response.read() == (repo.root / "Release").read_bytes()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "Release", timeout=2)
