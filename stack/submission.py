"""``python -m stack compose submission IMAGE DIR``: the folder a contest entry submits.

The contest pulls public images and runs no build, so the submitted compose is
``docker-compose.yml`` with two edits and nothing else: the app's image is the pushed ``IMAGE``
instead of ``${APP_IMAGE:-...}``, and the ``build:`` block is gone. It is derived from the
file's text, so comments, order and every other line stay as they are; the Nginx config it
mounts goes beside it at the same relative path.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from stack.compose import ComposeError

APP_IMAGE_LINE = re.compile(r"^(\s*)image: \$\{APP_IMAGE:-[^}]*\}\s*$")
BUILD_LINE = re.compile(r"^(\s*)build:\s*$")
NGINX_CONF = Path("deploy") / "nginx.conf"
_IMAGE_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]*$")


def submitted_compose(development: str, image: str) -> str:
    """``development`` (docker-compose.yml's text) with ``image`` pinned and no build step.

    Raises:
        ComposeError: the image is not a reference, or the file lacks the lines replaced.
    """
    if not _IMAGE_REFERENCE.match(image) or "/" not in image:
        raise ComposeError(
            f"{image!r}: expected a pushed image reference such as "
            "docker.io/you/rinha-functions:1 (a registry path, lower case)"
        )
    lines = development.splitlines(keepends=True)
    out: list[str] = []
    pinned = dropped = 0
    skip_deeper_than: int | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if line.strip() == "" or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if match := APP_IMAGE_LINE.match(line):
            out.append(f"{match.group(1)}image: {image}\n")
            pinned += 1
        elif match := BUILD_LINE.match(line):
            skip_deeper_than = len(match.group(1))
            dropped += 1
        else:
            out.append(line)
    if pinned != 1 or dropped != 1:
        raise ComposeError(
            "docker-compose.yml: expected one `image: ${APP_IMAGE:-...}` line and one `build:` "
            f"block in x-app, found {pinned} and {dropped}"
        )
    return "".join(out)


def write(root: Path, image: str, folder: Path) -> list[Path]:
    """Write the submission into ``folder``; returns the files written."""
    compose = root / "docker-compose.yml"
    text = submitted_compose(compose.read_text(), image)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NGINX_CONF).parent.mkdir(parents=True, exist_ok=True)
    target = folder / "docker-compose.yml"
    target.write_text(text)
    shutil.copyfile(root / NGINX_CONF, folder / NGINX_CONF)
    return [target, folder / NGINX_CONF]
