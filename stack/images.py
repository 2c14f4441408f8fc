"""The images ``python -m stack compose up`` needs that no registry here serves, built here.

The base, ``rinha-local/debian:bookworm-slim``, is made the way the official Debian images are:
``debootstrap --variant=minbase bookworm`` from Debian's mirror, trimmed as the slim variant is
(no docs, man pages or locales; no recommends; apt's caches cleaned), then ``docker import``.
The stand-ins for the public nginx, postgres and memcached images are built from it with
Debian's packages (``stack/standins/``, whose README says how each differs), and so is the
processor emulator's image (``emulator/Dockerfile``). The app's own image is built by compose
itself from the project's ``Dockerfile``, with this base as its ``BASE_IMAGE``.

Each image is built once; ``ensure`` builds only what is missing (``rebuild`` forces it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stack.engine import EngineUnavailable, docker
from stack.settings import PROJECT_ROOT

BASE_IMAGE = "rinha-local/debian:bookworm-slim"
STANDINS_DIR = PROJECT_ROOT / "stack" / "standins"
_DEBOOTSTRAP_TIMEOUT_S = 900.0
_BUILD_TIMEOUT_S = 900.0

_DPKG_SLIM = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""
_APT_SLIM = (
    'APT::Install-Recommends "false"; APT::Install-Suggests "false"; Acquire::Languages "none";\n'
)
_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb \
/var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb \
/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
"""
_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


@dataclass(frozen=True)
class Image:
    """One image built here: its tag and the folder (build context) its Dockerfile is in."""

    tag: str
    context: Path


STANDINS = {
    "nginx": Image("rinha-local/nginx:bookworm", STANDINS_DIR / "nginx"),
    "postgres": Image("rinha-local/postgres:bookworm", STANDINS_DIR / "postgres"),
    "memcached": Image("rinha-local/memcached:bookworm", STANDINS_DIR / "memcached"),
}
EMULATOR = Image("rinha-local/emulator:latest", PROJECT_ROOT / "emulator")


def exists(tag: str) -> bool:
    """Whether the engine holds an image tagged ``tag``."""
    return bool(docker("images", "-q", tag, check=False).strip())


def ensure(*, rebuild: bool = False, out: object = sys.stdout) -> list[str]:
    """Build the base, the stand-ins and the emulator's image where missing; returns the tags
    built now."""
    built = []
    if rebuild or not exists(BASE_IMAGE):
        build_base(out)
        built.append(BASE_IMAGE)
    for image in [*STANDINS.values(), EMULATOR]:
        if rebuild or BASE_IMAGE in built or not exists(image.tag):
            build(image, out)
            built.append(image.tag)
    return built


def build(image: Image, out: object = sys.stdout) -> None:
    """``docker build`` one image FROM the local base."""
    _say(out, f"building {image.tag}...")
    try:
        done = subprocess.run(
            [
                "docker",
                "build",
                "-q",
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "-t",
                image.tag,
                str(image.context),
            ],
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineUnavailable(
            f"building {image.tag} took over {_BUILD_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        raise EngineUnavailable(
            f"building {image.tag} failed:\n{(done.stdout + done.stderr)[-3000:]}"
        )


def build_base(out: object = sys.stdout) -> None:
    """debootstrap bookworm, trim it as the slim image is, and import it as ``BASE_IMAGE``."""
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("debootstrap is missing: `python -m stack compose up` installs it")
    _say(out, f"building {BASE_IMAGE} with debootstrap (a minute or so)...")
    root = Path(tempfile.mkdtemp(prefix="rinha-rootfs-", dir="/var/tmp"))
    try:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root)],
            capture_output=True,
            text=True,
            timeout=_DEBOOTSTRAP_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise EngineUnavailable(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
        _slim(root)
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE
        )
        imported = subprocess.run(
            [
                "docker",
                "import",
                "-c",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-c",
                "ENV LANG=C.UTF-8",
                "-c",
                'CMD ["bash"]',
                "-",
                BASE_IMAGE,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise EngineUnavailable(f"docker import failed: {imported.stderr.strip()[-2000:]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _slim(root: Path) -> None:
    """What the official slim image leaves out, and the apt settings it ships with."""
    (root / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(_DPKG_SLIM)
    (root / "etc/apt/apt.conf.d/99slim").write_text(_APT_SLIM)
    (root / "etc/apt/apt.conf.d/docker-clean").write_text(_APT_CLEAN)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(_SOURCES)
    doc = root / "usr/share/doc"
    for path in sorted(doc.rglob("*"), reverse=True):
        if (path.is_file() and path.name != "copyright") or path.is_symlink():
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for folder in ("usr/share/man", "usr/share/info", "usr/share/lintian", "var/lib/apt/lists"):
        for child in (root / folder).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for child in (root / "usr/share/locale").glob("*"):
        if child.name != "locale.alias":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/log/*.log"):
        for child in root.glob(pattern):
            child.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):  # docker mounts its own
        (root / name).write_text("")


def _say(out: object, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)  # type: ignore[call-overload]
