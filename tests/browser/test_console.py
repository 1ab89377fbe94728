"""The console in a real headless Chromium, on a real master and worker: sign in, start
from the form and watch the log tail grow, stop, drain a worker, see the charts."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.acceptance.conftest import Cluster
from tests.browser.conftest import (
    PASSWORD,
    cli_json,
    run_and_wait_running,
    screenshot,
    text_of,
    until,
)


def log_lines(driver: WebDriver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#log .line"))


def mark_page(driver: WebDriver) -> None:
    """A marker that a reload would wipe: live updates must keep it."""
    driver.execute_script("window.__scaleout_marker = 'kept';")


def page_kept(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.__scaleout_marker === 'kept';"))


def test_sign_in_shows_the_workers_page(browser: WebDriver, console: str, cluster: Cluster) -> None:
    browser.delete_all_cookies()
    browser.get(f"{console}/workers")
    assert "/login" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys("ann")
    browser.find_element(By.NAME, "password").send_keys("not the password")
    browser.find_element(By.ID, "sign-in").click()
    assert "wrong name or password" in until(browser, lambda d: text_of(d, "login-error"))
    browser.find_element(By.NAME, "username").send_keys("ann")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    until(browser, lambda d: "ann · admin" in text_of(d, "who"))
    row = f'tr[data-worker="{cluster.worker_id}"]'
    until(browser, lambda d: "online" in d.find_element(By.CSS_SELECTOR, row).text)
    screenshot(browser, "workers")


def test_start_from_the_form_and_watch_the_log_tail(
    signed_in: WebDriver, console: str, enabled_worker: str
) -> None:
    browser = signed_in
    browser.get(f"{console}/run?folder=F&project=SalesETL&package=Sleep")
    browser.find_element(By.NAME, "$Package::Seconds").send_keys("10")
    browser.find_element(By.NAME, "$Package::Interval").send_keys("0.5")
    browser.find_element(By.ID, "start").click()
    until(browser, lambda d: "/executions/" in d.current_url and d.find_elements(By.ID, "log"))
    mark_page(browser)
    first = until(browser, lambda d: log_lines(d) >= 2 and log_lines(d))
    until(browser, lambda d: log_lines(d) > first)  # lines arrive while we look
    assert page_kept(browser), "the page reloaded: the tail must update in place"
    assert "sleeping" in browser.find_element(By.ID, "log").text
    until(browser, lambda d: text_of(d, "status") == "succeeded")
    until(browser, lambda d: d.find_elements(By.ID, "log-end"))
    assert page_kept(browser)
    assert "ann" in browser.find_element(By.ID, "execution-facts").text  # the caller
    screenshot(browser, "execution")


def test_stop_a_running_execution(
    signed_in: WebDriver, console: str, cluster: Cluster, enabled_worker: str
) -> None:
    execution_id = run_and_wait_running(cluster, 120)
    browser = signed_in
    browser.get(f"{console}/workers")
    row = f'tr[data-worker="{enabled_worker}"]'
    until(browser, lambda d: "1 / 4" in d.find_element(By.CSS_SELECTOR, row).text)
    screenshot(browser, "workers-running")
    browser.get(f"{console}/executions/{execution_id}")
    until(browser, lambda d: text_of(d, "status") == "running")
    browser.find_element(By.ID, "stop").click()
    until(browser, lambda d: text_of(d, "status") == "canceled")
    row = cli_json(cluster, "executions", "show", str(execution_id))
    assert row["stopped_by_name"] == "ann"


def test_disable_a_worker_and_watch_it_drain(
    signed_in: WebDriver, console: str, cluster: Cluster, enabled_worker: str
) -> None:
    execution_id = run_and_wait_running(cluster, 12)
    browser = signed_in
    browser.get(f"{console}/workers/{enabled_worker}")
    mark_page(browser)
    browser.find_element(By.ID, "toggle").click()
    until(browser, lambda d: "draining, 1 running will finish" in text_of(d, "drain"))
    mark_page(browser)  # the form posted and redirected; from here it updates in place
    until(browser, lambda d: "drained, nothing running" in text_of(d, "drain"))
    assert page_kept(browser)
    row = cli_json(cluster, "executions", "show", str(execution_id))
    assert row["status"] == 7  # succeeded: the drain let it finish
    worker = cli_json(cluster, "workers", "show", enabled_worker)
    assert worker["is_enabled"] is False


def test_the_charts_render(signed_in: WebDriver, console: str) -> None:
    browser = signed_in
    browser.get(f"{console}/charts?hours=1")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-per-minute rect.bar"))
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-latency circle.dot"))
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-timeline rect.span"))
    for panel in ("chart-per-minute", "chart-latency", "chart-timeline"):
        svg = browser.find_element(By.CSS_SELECTOR, f"#{panel} svg")
        assert svg.size["width"] > 600
        assert svg.size["height"] > 40
    screenshot(browser, "charts")
    browser.get(f"{console}/executions")
    until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#executions-table tr[data-execution]")
    )
    screenshot(browser, "executions")
    browser.get(f"{console}/projects")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-package="Sleep"]'))
    screenshot(browser, "projects")


def test_no_page_broke_the_content_security_policy(signed_in: WebDriver, console: str) -> None:
    """Runs last: the browser's console log of the whole module has no CSP violation
    (an inline script or style that htmx or a template slipped in) and no script error."""
    browser = signed_in
    browser.get(f"{console}/workers")
    until(browser, lambda d: d.find_elements(By.ID, "workers-table"))
    entries = browser.get_log("browser")
    refused = [e["message"] for e in entries if "Content Security Policy" in e["message"]]
    assert refused == []
    # Network entries are the answers we asked for (the wrong password's 401, favicon 404).
    errors = [e["message"] for e in entries if e["level"] == "SEVERE" and e["source"] != "network"]
    assert errors == []
