"""Real services for the integration tests, one of each for the whole session.

``postgres``, ``memcached`` and ``emulators`` start on free ports of 127.0.0.1 and are shared
by every test; a test that changes a processor's delay, failure flag or payments calls
``emulators.reset()`` when it is done. None of them needs the runtime.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.processors import Processors
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.services import (
    reachable_tmp_dir,
    start_emulators,
    start_memcached,
    start_postgres,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL with role and database ``rinha``; ``.env()`` gives APP__POSTGRES__*."""
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def memcached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemcachedServer]:
    """A Memcached; ``.server`` is ``127.0.0.1:PORT``, ``.env()`` gives APP__MEMCACHED__SERVER."""
    with start_memcached(tmp_path_factory.mktemp("memcached")) as server:
        yield server


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processors]:
    """Both processor emulators (fees 0.05 and 0.15); ``.env()`` gives the URLs and fees."""
    with start_emulators(tmp_path_factory.mktemp("emulators")) as processors:
        yield processors


@pytest.fixture
def reachable_tmp_path() -> Iterator[Path]:
    """Like ``tmp_path``, but other users (Nginx's workers, postgres) can traverse it."""
    path = reachable_tmp_dir("rinha-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
