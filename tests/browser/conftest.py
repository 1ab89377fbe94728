"""Browser tests of the console: Debian's headless Chromium, driven by selenium through
Debian's chromedriver (never a downloaded browser), on a real cluster: a master and a
worker from the CLI on the loopback RabbitMQ, and ``scaleout web`` as its own process.

One cluster, console and browser serve the whole module (starting them is most of the
cost); each test sets up what it needs and waits for what it asserts, with deadlines.
Screenshots go to ``build/screenshots/`` (``SCALEOUT_TEST_SCREENSHOTS`` moves them).
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from dispatcher.web.users import add
from tests.acceptance.conftest import (
    Cli,
    Cluster,
    broker_is_up,
    closed_port,
    rabbitmqctl,
    running_cluster,
    stop,
)
from tests.fixtures.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sales_etl"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "browser-test-password"
DEADLINE_S = 45.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def module_broker() -> Iterator[str]:
    """A vhost of the module's own on the loopback RabbitMQ, for guest; its amqp:// URL."""
    broker_is_up()
    vhost = f"scaleout-web-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def cluster(module_tmp: Path, module_broker: str) -> Iterator[Cluster]:
    """A master and one enabled worker (MaxTaskCount 4) on a SQLite catalog with
    examples/sales_etl deployed to folder F."""
    cli = Cli(
        module_tmp,
        {
            "SCALEOUT_CATALOG__URL": f"sqlite:///{module_tmp / 'ssisdb.sqlite3'}",
            "SCALEOUT_BROKER__URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F",
        },
    )
    cli.ok("catalog", "init")
    cli.ok("deploy", str(EXAMPLE), "--folder", "F")
    with running_cluster(cli, module_tmp, module_broker) as running:
        cli.ok("workers", "set", running.worker_id, "DisplayName", "ETL host 1")
        cli.ok("workers", "set", running.worker_id, "Tags", "etl,eu")
        cli.ok("workers", "add", "w2", "--display-name", "spare", "--max-task-count", "2")
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def console(cluster: Cluster, module_tmp: Path) -> Iterator[str]:
    """``scaleout web`` on the cluster's catalog, sign-in on (a users file with ann, an
    admin); its base URL."""
    users = module_tmp / "web-users.toml"
    add(users, "ann", "admin", PASSWORD)
    port = free_port()
    log = module_tmp / "web.log"
    proc = cluster.cli.spawn(
        "web",
        "--port",
        str(port),
        "--users-file",
        str(users),
        log=log,
        env={"SCALEOUT_WEB_POLL_MS": "500"},
    )
    base = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_for(listening, 30, "the console to listen")
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.fail(
                f"{path} is missing: run `bash deploy/local/bootstrap.sh` (it installs "
                "Debian's chromium and chromium-driver)",
                pytrace=False,
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see CSP reports
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def signed_in(browser: WebDriver, console: str) -> WebDriver:
    browser.get(f"{console}/workers")
    if "/login" in browser.current_url:
        browser.find_element(By.NAME, "username").send_keys("ann")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "sign-in").click()
        until(browser, lambda d: "/workers" in d.current_url and d.find_elements(By.ID, "who"))
    return browser


def until(
    driver: WebDriver, condition: Callable[[WebDriver], T], timeout_s: float = DEADLINE_S
) -> T:
    """Wait for ``condition`` (elements re-rendered by htmx may go stale meanwhile)."""
    wait = WebDriverWait(
        driver, timeout_s, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    result: T = wait.until(condition)
    return result


def text_of(driver: WebDriver, element_id: str) -> str:
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except (WebDriverException, StaleElementReferenceException):
        return ""


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("SCALEOUT_TEST_SCREENSHOTS", REPO / "build" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: WebDriver, name: str) -> Path:
    """The page as a PNG, checked: a real size and a real picture, not a blank page."""
    path = screenshots_dir() / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        assert (width, height) >= (1000, 600)
        data = rgb.resize((200, 150)).tobytes()
    pixels = [data[i : i + 3] for i in range(0, len(data), 3)]
    background = max(set(pixels), key=pixels.count)
    painted = sum(1 for p in pixels if p != background) / len(pixels)
    assert painted > 0.05, f"{path}: only {painted:.1%} of the page differs from its background"
    assert len(set(pixels)) > 20, f"{path} has too few colours to be a rendered page"
    return path


def cli_json(cluster: Cluster, *argv: str) -> Any:
    return cluster.cli.ok(*argv, "--json").json()


def run_and_wait_running(cluster: Cluster, seconds: float) -> int:
    """A Sleep execution started from the CLI, once it runs on the worker."""
    row = cli_json(
        cluster,
        "executions",
        "create",
        "--folder",
        "F",
        "--project",
        "SalesETL",
        "--package",
        "Sleep",
        "--param",
        f"Seconds={seconds}",
        "--param",
        "Interval=0.5",
        "--start",
    )
    execution_id = int(row["execution_id"])
    wait_for(
        lambda: cli_json(cluster, "executions", "show", str(execution_id))["status"] == 2,
        DEADLINE_S,
        f"execution {execution_id} to run",
    )
    return execution_id


@pytest.fixture
def enabled_worker(cluster: Cluster) -> str:
    cluster.cli.ok("workers", "enable", cluster.worker_id)
    return cluster.worker_id
