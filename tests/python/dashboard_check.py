"""The dashboard in a real browser: Debian's Chromium, headless, driven by selenium through
Debian's chromedriver, against a running control plane with traffic.

Checks what a user would see: the URL's `#token=` is taken and removed from the address bar;
every service is drawn and listed; an edge has a non-zero rate; the failing edge is drawn in the
failing colour and the healthy one in the healthy colour; mTLS edges (only they) have a padlock,
proxies show when their certificates expire, the services given show their open circuit
breakers; the rollouts given are listed (or "No rollouts"); the graph's labels can be reached
with the keyboard and keep the focus across a refresh; a configuration event opens its diff;
the console shows no error (a Content-Security-Policy violation would be one); without a token
the page asks for one in a form, refuses a wrong one, and works once given the right one.
Saves a screenshot. Exits 1 with the reasons on failure.

    dashboard_check.py --url http://127.0.0.1:PORT/ --token TOKEN --service web.default ...
        --failing web.default>users.default --healthy web.default>orders.default
        [--secured web.default>users.default] [--breakers users.default] [--rollout default/web]
        --screenshot target/dashboard.png
"""

import argparse
import os
import re
import sys

# selenium must use the driver and browser given, never fetch its own.
os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The health colours of dashboard.css, as the browser computes them.
FAILING = "rgb(198, 40, 40)"
HEALTHY = "rgb(26, 127, 55)"


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


def css(value):
    """A CSS attribute-selector string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def browser(args):
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-sync",
        "--lang=en-US",
        "--window-size=1440,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)


def wait(driver, what, condition, seconds=15):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        raise Failed(f"never: {what}") from None


def loaded_with(driver, services):
    """Waits until the page drew every service from the API."""

    def drawn(d):
        if d.execute_script("return document.body.dataset.loaded") != "true":
            return False
        return all(d.find_elements(By.CSS_SELECTOR, f"g.node[data-service={css(s)}]") for s in services)

    wait(driver, f"the graph shows {services}", drawn)


def check_content(driver, args):
    body = driver.find_element(By.TAG_NAME, "body").text
    for service in args.service:
        expect(service in body, f"{service} is not on the page")
        row = driver.find_elements(By.CSS_SELECTOR, f"#services-table tr[data-service={css(service)}]")
        expect(row, f"{service} has no row in the services table")
        node = driver.find_element(By.CSS_SELECTOR, f"g.node[data-service={css(service)}]")
        expect(node.is_displayed(), f"{service}'s node is not visible")
        expect(service.split(".")[0] in node.text, f"{service}'s node reads {node.text!r}")

    # An edge with traffic: a non-zero rate in its table row and in its label on the graph.
    row = driver.find_element(By.CSS_SELECTOR, f"#edges-table tr[data-edge={css(args.healthy)}]")
    rate = float(row.find_elements(By.TAG_NAME, "td")[6].text)
    expect(rate > 0, f"{args.healthy}: rate {rate} in {row.text!r}")
    label = driver.find_element(By.CSS_SELECTOR, f"g.edge-label[data-edge={css(args.healthy)}]")
    expect("rps" in label.text and not label.text.startswith("0.00"), f"{args.healthy}'s label: {label.text!r}")

    # Failing and healthy edges, drawn in their colours and labelled in words.
    for edge, colour, word in ((args.failing, FAILING, "failing"), (args.healthy, HEALTHY, "healthy")):
        line = driver.find_element(By.CSS_SELECTOR, f"g.edge[data-edge={css(edge)}] path.line")
        stroke = line.value_of_css_property("stroke")
        expect(stroke == colour, f"{edge} is drawn in {stroke}, not {colour} ({word})")
        label = driver.find_element(By.CSS_SELECTOR, f"g.edge-label[data-edge={css(edge)}]")
        expect(word in label.get_attribute("aria-label"), f"{edge}'s label says {label.get_attribute('aria-label')!r}")
        cells = driver.find_element(By.CSS_SELECTOR, f"#edges-table tr[data-edge={css(edge)}]").text
        expect(word.capitalize() in cells, f"{edge}'s row reads {cells!r}")

    # The mTLS edge has a padlock (and says so); the others have none.
    for label in driver.find_elements(By.CSS_SELECTOR, "g.edge-label"):
        edge = label.get_attribute("data-edge")
        locked = bool(label.find_elements(By.CSS_SELECTOR, ".lock"))
        expect(locked == (edge in args.secured), f"{edge}: padlock {locked}")
        expect(("not mTLS" not in label.get_attribute("aria-label")) == locked, f"{edge}: {label.get_attribute('aria-label')!r}")

    # Circuit breakers: the services given show theirs open, and the overview counts them.
    for service in args.breakers:
        row = driver.find_element(By.CSS_SELECTOR, f"#services-table tr[data-service={css(service)}]")
        cells = row.find_elements(By.TAG_NAME, "td")
        expect(int(cells[-1].text) >= 1, f"{service}: breakers open {cells[-1].text!r} in {row.text!r}")
    if args.breakers:
        cards = driver.find_element(By.ID, "cards").text
        expect("circuit breakers open" in cards, f"no breaker card: {cards!r}")

    # Proxies: on the configuration in force, and when their certificates expire.
    proxies = driver.find_element(By.ID, "proxies-table").text
    expect("current" in proxies, f"no current proxy: {proxies!r}")
    if args.secured:
        expect(re.search(r"in \d+ (h|min|days)", proxies), f"no certificate expiry: {proxies!r}")
    # Rollouts: each given one with its phase and its canary's weight, or none at all.
    if args.rollout:
        for name in args.rollout:
            row = wait(driver, f"the rollout {name} is listed", lambda d: d.find_elements(
                By.CSS_SELECTOR, f"#rollouts-table tr[data-rollout={css(name)}]"))[0]
            phase = row.find_elements(By.TAG_NAME, "td")[0].text
            expect(phase in ("Progressing", "Paused", "Promoted", "Aborted", "RollingBack"), f"{name}: phase {phase!r}")
            meter = row.find_element(By.TAG_NAME, "meter")
            expect(meter.get_attribute("aria-label"), f"{name}: the weight has no label")
    else:
        rollouts = driver.find_element(By.ID, "rollouts").text
        expect("No rollouts" in rollouts, f"rollouts: {rollouts!r}")

    # Landmarks and headings.
    for selector in ("header", "main", "nav", "h1", "#topology h2", "svg[role=group]"):
        expect(driver.find_elements(By.CSS_SELECTOR, selector), f"no {selector}")


def check_keyboard(driver):
    """Tab from the top reaches a graph label, which reads as a sentence and keeps the focus
    when the page refreshes (the graph is redrawn)."""
    driver.execute_script("document.querySelector('.skip').focus()")
    actions = webdriver.ActionChains(driver)
    for _ in range(60):
        actions.send_keys(Keys.TAB).perform()
        focused = driver.switch_to.active_element
        if "edge-label" in (focused.get_attribute("class") or ""):
            expect("requests per second" in focused.get_attribute("aria-label"), "an edge's label has no text")
            break
    else:
        raise Failed("the keyboard never reaches an edge of the graph")
    edge = focused.get_attribute("data-edge")
    updated = driver.find_element(By.ID, "updated").text
    wait(driver, "a refresh", lambda d: d.find_element(By.ID, "updated").text != updated, seconds=10)
    after = driver.switch_to.active_element
    expect(after.get_attribute("data-edge") == edge, f"the focus left {edge} on a refresh: {after.get_attribute('outerHTML')[:80]}")


def check_diff(driver):
    """A Service applied opens its diff, with the lines it added."""
    rows = [r for r in driver.find_elements(By.CSS_SELECTOR, "#events-table tbody tr")
            if "ResourceApplied" in r.text and "Service/" in r.text]
    expect(rows, "no Service applied among the configuration events")
    rows[0].find_element(By.CSS_SELECTOR, "a[href^='#diff-']").click()
    wait(driver, "the diff shows", lambda d: "Service/" in d.find_element(By.ID, "diff-body").text)
    text = driver.find_element(By.ID, "diff-body").text
    expect("+ " in text, f"the diff shows no added line: {text!r}")


def check_console(driver):
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            errors.append(entry["message"])
    expect(not errors, f"console errors: {errors}")


def check_login(driver, args):
    driver.execute_script("sessionStorage.clear()")
    driver.get(args.url)
    wait(driver, "the page asks for a token", lambda d: d.find_element(By.ID, "login").is_displayed())
    field = driver.find_element(By.ID, "token")
    label = driver.find_element(By.CSS_SELECTOR, "label[for=token]").text
    expect("token" in label.lower(), f"the field's label reads {label!r}")
    expect(driver.switch_to.active_element == field, "the token field does not have the focus")
    expect(not driver.find_element(By.ID, "content").is_displayed(), "content shown without a token")
    field.send_keys("not-a-token" + Keys.ENTER)
    wait(driver, "a wrong token is refused", lambda d: "refused" in d.find_element(By.ID, "problem").text)
    field = driver.find_element(By.ID, "token")
    field.send_keys(args.token + Keys.ENTER)
    loaded_with(driver, args.service)


def screenshot(driver, path):
    """The whole page: the viewport made as tall as the document."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1440, "height": min(max(height, 900), 6000), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    expect(driver.save_screenshot(path), f"no screenshot saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the dashboard, e.g. http://127.0.0.1:PORT/")
    parser.add_argument("--token", required=True, help="a read-only token")
    parser.add_argument("--service", action="append", required=True, help="a service the page must show")
    parser.add_argument("--failing", required=True, help="an edge SRC>DST that must be drawn as failing")
    parser.add_argument("--healthy", required=True, help="an edge SRC>DST with traffic, drawn as healthy")
    parser.add_argument("--secured", action="append", default=[], help="an edge SRC>DST that is mTLS")
    parser.add_argument("--breakers", action="append", default=[], help="a service with a circuit breaker open")
    parser.add_argument("--rollout", action="append", default=[], help="a rollout NAMESPACE/NAME to be listed")
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    driver = browser(args)
    try:
        driver.get(f"{args.url}#token={args.token}")
        loaded_with(driver, args.service)
        expect("token" not in driver.current_url, f"the token stays in the URL: {driver.current_url}")
        check_content(driver, args)
        check_keyboard(driver)
        check_diff(driver)
        check_console(driver)
        check_login(driver, args)
        check_content(driver, args)
        screenshot(driver, args.screenshot)
    except Failed as e:
        try:
            screenshot(driver, args.screenshot)
        except Exception:  # noqa: BLE001 - the failure itself is what to report
            pass
        print(f"dashboard check failed: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
