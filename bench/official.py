"""The contest's own test scripts, run as they are: ``python -m bench final --official DIR``.

``DIR`` is a checkout of the contest's repository (github.com/zanfranceschi/rinha-de-backend-2025;
the final ran ``rinha-test/rinha-final.js`` as of commit e853c851c0e0, the preview
``rinha-test/rinha.js``), which this project does not carry. The scripts are copied into the
run's folder unchanged but for their remote ``import`` URLs, which point at local copies
instead: k6 1.1.0 fetches ``https://`` imports at start, and this machine reaches neither
jslib.k6.io nor jsdelivr. The copies live in a vendor folder laid out by host and path
(``jslib.k6.io/k6-utils/1.4.0/index.js``); ``python -m bench.official vendor DIR VENDOR``
fills it: from the URLs where they are reachable, big.js from npm (jsdelivr's
``big.min.js`` is a minified ``big.js`` of the same package), or says which file to copy from
where (grafana/jslib.k6.io's ``lib/<name>/<version>/index.js``).

``requests.js`` calls ``localhost:9999``, ``:8001`` and ``:8002``: the benchmark's stack, and
its floor, listen on exactly those ports for an official run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from stack.settings import PROJECT_ROOT

SCRIPTS = {"final": "rinha-final.js", "stress": "rinha-final.js", "preview": "rinha.js"}
"""The contest's script of each mode (the stress mode is the final's at twice the VUs)."""
TEST_FOLDER = "rinha-test"
PORTS = {"STACK_PORT": 9999, "STACK_DEFAULT_PORT": 8001, "STACK_FALLBACK_PORT": 8002}
"""Where requests.js sends its requests (``localhost``)."""
DEFAULT_VENDOR = PROJECT_ROOT / "var" / "k6-vendor"
_REMOTE_IMPORT = re.compile(r"""(\bfrom\s+["'])https://([^"']+)(["'])""")
_LOCAL_IMPORT = re.compile(r"""\bfrom\s+["'](\./[^"']+)["']""")
_JSDELIVR_NPM = re.compile(r"^cdn\.jsdelivr\.net/npm/(?P<name>[^@/]+)@(?P<version>[^/]+)/")
_FETCH_TIMEOUT_S = 30.0


class OfficialUnavailable(Exception):
    """The official scripts cannot be run as asked; the message says what is missing."""


def remote_imports(text: str) -> list[str]:
    """The ``host/path`` of each ``https://`` import in a script."""
    return [match.group(2) for match in _REMOTE_IMPORT.finditer(text)]


def localized(text: str) -> str:
    """``text`` with each ``https://host/path`` import turned into ``./vendor/host/path``."""
    return _REMOTE_IMPORT.sub(lambda m: f"{m.group(1)}./vendor/{m.group(2)}{m.group(3)}", text)


def _scripts(folder: Path, entry: str) -> list[str]:
    """``entry`` and the local files it imports, transitively (``./requests.js``)."""
    found: list[str] = []
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = folder / name
        if not path.is_file():
            raise OfficialUnavailable(f"{path}: missing from the contest's checkout")
        found.append(name)
        pending += [m.group(1)[2:] for m in _LOCAL_IMPORT.finditer(path.read_text())]
    return found


def prepare(contest: Path, vendor: Path, dest: Path, mode: str) -> Path:
    """Copy ``mode``'s official script and what it imports into ``dest`` (imports made local,
    vendor files beside them); returns the script's path there.

    Raises:
        OfficialUnavailable: no such script in ``contest``, or vendor files missing.
    """
    if mode not in SCRIPTS:
        raise OfficialUnavailable(
            f"the contest has no script for mode {mode!r}; --official runs "
            f"{', '.join(sorted(SCRIPTS))}"
        )
    folder = contest / TEST_FOLDER
    if not folder.is_dir():
        raise OfficialUnavailable(
            f"{contest}: no {TEST_FOLDER}/ folder; give a checkout of "
            "github.com/zanfranceschi/rinha-de-backend-2025 (the final: commit e853c851c0e0)"
        )
    names = _scripts(folder, SCRIPTS[mode])
    texts = {name: (folder / name).read_text() for name in names}
    needed = sorted({url for text in texts.values() for url in remote_imports(text)})
    missing = [url for url in needed if not (vendor / url).is_file()]
    if missing:
        listed = "\n  ".join(f"https://{url}" for url in missing)
        raise OfficialUnavailable(
            f"{vendor} lacks local copies of:\n  {listed}\n"
            f"run `python -m bench.official vendor {contest} {vendor}` (or copy them there, "
            "laid out by host and path)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(localized(text))
    for url in needed:
        target = dest / "vendor" / url
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vendor / url, target)
        source_map = (vendor / url).with_name((vendor / url).name + ".map")
        if source_map.is_file():
            shutil.copyfile(source_map, target.with_name(target.name + ".map"))
    return dest / SCRIPTS[mode]


def fetch_vendor(contest: Path, vendor: Path) -> list[str]:
    """Fetch every remote import of every official script into ``vendor``; returns what could
    not be fetched, each with where to get it."""
    folder = contest / TEST_FOLDER
    urls = sorted(
        {
            url
            for mode in SCRIPTS
            if (folder / SCRIPTS[mode]).is_file()
            for name in _scripts(folder, SCRIPTS[mode])
            for url in remote_imports((folder / name).read_text())
        }
    )
    failed = []
    for url in urls:
        target = vendor / url
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        npm = _JSDELIVR_NPM.match(url)
        try:
            if npm:
                _from_npm(npm.group("name"), npm.group("version"), target)
            else:
                with urllib.request.urlopen(f"https://{url}", timeout=_FETCH_TIMEOUT_S) as r:
                    target.write_bytes(r.read())
                _fetch_source_map(url, target)
        except (OSError, urllib.error.URLError, subprocess.SubprocessError, KeyError) as exc:
            hint = ""
            if url.startswith("jslib.k6.io/"):
                hint = f" (github.com/grafana/jslib.k6.io: lib/{url.split('/', 1)[1]})"
            failed.append(f"https://{url}{hint}: {exc}")
    return failed


def _fetch_source_map(url: str, target: Path) -> None:
    """The file's source map, where there is one: without it k6 warns at every start."""
    try:
        with urllib.request.urlopen(f"https://{url}.map", timeout=_FETCH_TIMEOUT_S) as r:
            target.with_name(target.name + ".map").write_bytes(r.read())
    except (OSError, urllib.error.URLError):
        pass  # optional


def _from_npm(name: str, version: str, target: Path) -> None:
    """``name@version``'s main file from npm (``npm pack``): jsdelivr's ``*.min.js`` of a
    package is that file minified."""
    with tempfile.TemporaryDirectory(prefix="k6-vendor-") as tmp:
        subprocess.run(
            ["npm", "pack", "--silent", f"{name}@{version}"],
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=120,
        )
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            member = tar.extractfile(f"package/{name}")
            if member is None:
                raise KeyError(f"package/{name} in {archive.name}")
            target.write_bytes(member.read())


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.official vendor CONTEST VENDOR``."""
    parser = argparse.ArgumentParser(prog="python -m bench.official", description=__doc__)
    parser.add_argument("command", choices=["vendor"])
    parser.add_argument("contest", type=Path, help="a checkout of the contest's repository")
    parser.add_argument(
        "vendor", type=Path, nargs="?", default=DEFAULT_VENDOR, help=f"default {DEFAULT_VENDOR}"
    )
    args = parser.parse_args(argv)
    failed = fetch_vendor(args.contest, args.vendor)
    for line in failed:
        print(f"not fetched: {line}", file=sys.stderr)
    print(f"{args.vendor}: {'incomplete' if failed else 'complete'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
