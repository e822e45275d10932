"""No secret in any log line, error, repr, settings dump or summary — on error paths too.

The secrets: the OpenCTI token, credentials in the platform URL, and a feed URL
carrying a user name, a password and an access key in its query.  The feed is
served by a local ``http.server`` (200, 401, 500) or not at all (a closed
port).  The real CLI runs in a subprocess at log level debug (urllib3 logs
request paths there, and retry warnings at every level); everything it prints
is searched for every secret.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connector_batching.testing.stub_platform import StubOpenCTI
from example_connector.client import FeedError, FeedReader
from example_connector.connector import URLhausConnector
from example_connector.settings import SettingsError, load_settings

from .conftest import child_env, cli, make_feed_rows, record, summary_table, write_feed

TOKEN = "tok-0b7c4d2e-9f1a-4c3b-8e5d-SECRET"
PLATFORM_PASSWORD = "platform-pass-SECRET"
FEED_USER = "feeduser-SECRET"
FEED_PASSWORD = "feedpass-SECRET"
FEED_KEY = "feedkey-0123456789abcdef-SECRET"
SECRETS = (TOKEN, PLATFORM_PASSWORD, FEED_USER, FEED_PASSWORD, FEED_KEY)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"{secret!r} leaked in: {str(text)[:2000]}"


class _Feed(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        status = {"/401/": 401, "/500/": 500}.get(self.path[:5], 200)
        payload = self.body if status == 200 else f"error {status} for {self.path}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the server's own access log is not the connector's


@pytest.fixture(scope="module")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    feed = write_feed(tmp_path_factory.mktemp("feed") / "feed.csv", make_feed_rows(30))
    _Feed.body = feed.read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Feed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _feed_url(port: int, status: str = "ok") -> str:
    return f"http://{FEED_USER}:{FEED_PASSWORD}@127.0.0.1:{port}/{status}/feed.csv?key={FEED_KEY}"


def _platform_env() -> dict[str, str]:
    return {
        "OPENCTI_TOKEN": TOKEN,
        "OPENCTI_URL": f"http://admin:{PLATFORM_PASSWORD}@127.0.0.1:{_closed_port()}",
        "CONNECTOR_ID": "0e0f6d28-5a3a-4c2e-9f50-7f3c1b2a9d11",
    }


CASES = {
    "feed_ok": ("ok", 0, "answering 200 (30 rows delivered)"),
    "http_401": ("401", 1, "answering HTTP 401"),
    "http_500": ("500", 1, "answering HTTP 500 (retried)"),
    "unreachable": ("closed", 1, "refusing connections (retried)"),
    "bad_port": ("badport", 1, "URL not parsing (port 99999)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_never_prints_a_secret(case: str, feed_server: int, tmp_path: Path) -> None:
    status, expected_code, label = CASES[case]
    if status == "closed":
        url = _feed_url(_closed_port())
    elif status == "badport":
        url = f"http://{FEED_USER}:{FEED_PASSWORD}@127.0.0.1:99999/feed.csv?key={FEED_KEY}"
    else:
        url = _feed_url(feed_server, status)
    env = child_env(
        **_platform_env(),
        URLHAUS_FEED_URL=url,
        URLHAUS_REQUEST_RETRIES="1",
        URLHAUS_REQUEST_TIMEOUT="5",
    )
    done = subprocess.run(
        cli("--offline", str(tmp_path / "out"), "--log-level", "debug"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == expected_code, done.stderr
    assert_no_secret(done.stdout, done.stderr)
    if expected_code == 0:
        table = summary_table(done.stdout)
        assert table["feed"] == f"http://127.0.0.1:{feed_server}/…"
        assert table["rows delivered"] == "30 of 30"
        assert "GET ***" in done.stderr  # urllib3's debug line, scrubbed
    else:
        assert "error: cannot download feed http://127.0.0.1" in done.stderr
    if status in ("500", "closed"):
        assert "Retry" in done.stderr  # urllib3's retry log lines were there, scrubbed
    record(
        f"30-{list(CASES).index(case)}",
        "secrets (OpenCTI token, platform URL password, feed URL user, password and "
        f"`?key=`) with the feed {label}; CLI at log level debug",
        f"exit {expected_code}; no secret in stdout or stderr (urllib3's request and "
        "retry lines included, scrubbed to `***`); the summary and errors name the feed "
        "`http://host:port/…`",
        lost="nothing; no secret shown",
    )


def test_invalid_settings_never_echo_a_secret(tmp_path: Path) -> None:
    env = child_env(
        OPENCTI_TOKEN=TOKEN,
        OPENCTI_URL=f"ftp://admin:{PLATFORM_PASSWORD}@platform.test/?token={TOKEN}",
        URLHAUS_FEED_URL=_feed_url(1),
        URLHAUS_BATCH_SIZE="0",
        URLHAUS_FUTURE_DATE_MARGIN=f"soon {FEED_KEY}",
    )
    done = subprocess.run(
        cli("--offline", str(tmp_path / "out")),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "OPENCTI_URL (opencti.url): must start with http:// or https://" in done.stderr
    assert "URLHAUS_BATCH_SIZE (urlhaus.batch_size)" in done.stderr
    assert "(got 'ftp://platform.test/…')" in done.stderr
    assert_no_secret(done.stdout, done.stderr.replace(f"soon {FEED_KEY}", ""))
    # (the margin's own value is echoed: it is not a secret, whatever it holds)
    record(
        "31",
        "invalid settings next to secrets: a token, an `ftp://` platform URL with a "
        "password and a token in its query, a feed URL with credentials",
        "exit 2, one line per invalid setting naming the variable and the YAML key; URLs "
        "echoed redacted (`ftp://platform.test/…`), the token never",
        lost="nothing; no secret shown",
    )


def test_online_settings_errors_never_echo_a_secret(tmp_path: Path) -> None:
    env = child_env(OPENCTI_TOKEN=TOKEN, URLHAUS_FEED_URL=_feed_url(1))  # no URL, no id
    done = subprocess.run(cli(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "OPENCTI_URL (opencti.url): required" in done.stderr
    assert_no_secret(done.stdout, done.stderr)
    record(
        "32",
        "online start with settings missing (no platform URL, no connector id) and a "
        "token and feed credentials set",
        "exit 2 naming what is missing; no secret shown",
        lost="nothing; no secret shown",
    )


def test_reprs_dumps_errors_and_summary_hold_no_secret(tmp_path: Path) -> None:
    environ = {
        **_platform_env(),
        "URLHAUS_FEED_URL": _feed_url(_closed_port()),
        "URLHAUS_REQUEST_RETRIES": "0",
    }
    settings = load_settings(environ=environ)
    assert settings.opencti.token is not None
    assert settings.opencti.token.get_secret_value() == TOKEN  # still usable
    assert FEED_KEY in settings.urlhaus.feed_url
    assert_no_secret(
        repr(settings),
        str(settings),
        settings.model_dump(),
        settings.model_dump_json(),
        repr(settings.urlhaus),
        repr(settings.opencti),
    )
    reader = FeedReader(settings.urlhaus.feed_url, retries=0, timeout=5)
    with pytest.raises(FeedError) as caught:
        list(reader.rows())
    error = caught.value
    assert error.__cause__ is None and error.__context__ is None  # requests' error not chained
    assert_no_secret(str(error), repr(error), error.args)

    connector = URLhausConnector(settings, work_manager=object(), dead_letter_path=tmp_path / "d")
    connector.get_cursor = lambda key: None  # type: ignore[method-assign,assignment]
    with pytest.raises(FeedError) as caught:
        connector.run_once()
    assert_no_secret(str(caught.value))

    with pytest.raises(SettingsError) as bad:
        load_settings(environ={**environ, "OPENCTI_URL": f"ftp://u:{PLATFORM_PASSWORD}@x/"})
    assert_no_secret(str(bad.value), repr(bad.value))
    record(
        "33",
        "secrets in settings: `repr`, `str`, `model_dump`, `model_dump_json`; a feed "
        "error raised in process",
        "the token shows as `**********`, URLs as `scheme://host:port/…`; the feed error "
        "names the redacted URL and does not chain requests' exception (which holds "
        "the full URL)",
        lost="nothing; no secret shown",
    )


@pytest.mark.broker
def test_online_run_never_prints_a_secret(
    stub: StubOpenCTI, feed_server: int, tmp_path: Path
) -> None:
    """Online (real pycti helper, stub platform, real broker), the feed answering 401:
    neither the platform's token nor the feed's credentials reach the output."""
    env = child_env(
        OPENCTI_URL=stub.url,
        OPENCTI_TOKEN=stub.token,
        OPENCTI_JSON_LOGGING="false",
        CONNECTOR_ID=stub.connector_id,
        CONNECTOR_DURATION_PERIOD="PT0S",
        CONNECTOR_LOG_LEVEL="debug",
        URLHAUS_FEED_URL=_feed_url(feed_server, "401"),
        URLHAUS_REQUEST_RETRIES="0",
        URLHAUS_DEAD_LETTER_PATH=str(tmp_path / "dead_letters.db"),
    )
    done = subprocess.run(cli(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]  # an unreadable feed waits for next run
    assert "URLhaus run skipped, the next run retries" in done.stderr + done.stdout
    output = done.stdout + done.stderr
    assert stub.token not in output
    assert "cannot download feed http://127.0.0.1:" in output  # the error path ran
    assert_no_secret(output)
    record(
        "34",
        "online run (real pycti helper, stub platform, real broker) at log level debug "
        "with the token and a feed URL with credentials answering HTTP 401",
        "the run is skipped for the next schedule, exit 0; neither the token nor the "
        "feed's credentials appear in any output (pycti's logs included)",
        lost="nothing; no secret shown",
    )
