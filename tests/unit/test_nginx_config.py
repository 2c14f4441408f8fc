"""The local stack's Nginx config is deploy/nginx.conf with only the local paths swapped in."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.nginx import TEMPLATE, NginxConfigError, render_config

_SOCKETS = [Path("/s/run/app1.sock"), Path("/s/run/app2.sock")]


def _render(template: str | None = None, sockets: list[Path] = _SOCKETS) -> str:
    text = TEMPLATE.read_text() if template is None else template
    return render_config(text, upstream_sockets=sockets, port=19999, dir=Path("/s/nginx"))


def test_listens_on_loopback_at_the_given_port_only() -> None:
    text = _render()
    assert "listen 127.0.0.1:19999 backlog=4096;" in text
    assert "9999;" not in text.replace("19999", "")


def test_upstream_lists_the_given_sockets_with_the_templates_parameters() -> None:
    text = _render()
    assert "server unix:/s/run/app1.sock max_fails=3 fail_timeout=1s;" in text
    assert "server unix:/s/run/app2.sock max_fails=3 fail_timeout=1s;" in text
    assert "/run/app/" not in text


def test_one_socket_gives_a_one_server_upstream() -> None:
    text = _render(sockets=[Path("/x/only.sock")])
    assert text.count("server unix:") == 1


def test_pid_and_temp_files_go_under_the_stack_folder() -> None:
    text = _render()
    assert "pid /s/nginx/nginx.pid;" in text
    assert "client_body_temp_path /s/nginx/tmp/body;" in text
    assert "proxy_temp_path /s/nginx/tmp/proxy;" in text


def test_everything_else_is_the_compose_config_unchanged() -> None:
    template = TEMPLATE.read_text()
    kept = [line for line in template.splitlines() if "unix:" not in line and "pid " not in line]
    text = _render()
    for line in kept:
        if "listen" not in line:
            assert line in text


def test_the_template_is_tuned_for_the_contest() -> None:
    text = TEMPLATE.read_text()
    for directive in (
        "worker_processes 1;",
        "use epoll;",
        "access_log off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "least_conn;",
        "keepalive 256;",
        "client_max_body_size 4k;",
        "listen 9999",
    ):
        assert directive in text


def test_a_template_without_a_pid_line_is_refused() -> None:
    template = TEMPLATE.read_text().replace("pid /var/run/nginx.pid;", "")
    with pytest.raises(NginxConfigError, match="'pid'"):
        _render(template)


def test_no_upstream_socket_is_refused() -> None:
    with pytest.raises(NginxConfigError, match="upstream"):
        _render(sockets=[])


def test_fail_timeout_is_read_from_the_upstream_servers() -> None:
    from stack.nginx import fail_timeout_s

    assert (
        fail_timeout_s("server a max_fails=3 fail_timeout=1s;\nserver b fail_timeout=500ms;") == 1.0
    )
    assert fail_timeout_s("server a fail_timeout=2;") == 2.0
    assert fail_timeout_s("server a;") == 10.0  # Nginx's own default
    assert fail_timeout_s() == 1.0  # deploy/nginx.conf's, which stack reload waits out
