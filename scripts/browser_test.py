"""Drives the Panal web console in headless Chromium (run by scripts/browser-test.sh).

A shopper signs in with the keyboard, searches, opens a book, buys, is declined with one
test card and pays with another, opens the invoice and the order list, signs out; the admin
signs in on another node, sees every node and the leader, watches the live metrics
receive new samples, looks at the page at phone width, signs out. Each page is saved as a
screenshot; the first page's transferred bytes and time to interactive are printed.
"""

import argparse
import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 60  # seconds for anything on a loaded machine

args = argparse.ArgumentParser()
args.add_argument("--url", required=True)
args.add_argument("--other", required=True)
args.add_argument("--admin-password", required=True)
args.add_argument("--chrome", required=True)
args.add_argument("--driver", required=True)
args.add_argument("--artifacts", required=True)
args = args.parse_args()

options = webdriver.ChromeOptions()
options.binary_location = args.chrome
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
             "--disable-gpu", "--no-first-run", "--disable-extensions"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path=args.driver), options=options)
wait = WebDriverWait(driver, WAIT)
shots = []


def shot(name):
    path = os.path.join(args.artifacts, f"{len(shots) + 1:02d}-{name}.png")
    driver.save_screenshot(path)
    shots.append(os.path.basename(path))
    print(f"  page {name:<14} {driver.title!r:<40} -> {os.path.basename(path)}")


def el(css):
    return wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def visible(css):
    return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def text_in(css, text):
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def ready():
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def sign_in(base, user, password):
    driver.get(f"{base}/ui/#/login")
    ready()
    username = visible("#login-form input[name=username]")
    # Keyboard only: the username field has focus, Tab moves on, Enter submits.
    assert driver.switch_to.active_element == username, "the login page focuses the username field"
    username.send_keys(user)
    username.send_keys(Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.get_attribute("name") == "password", "Tab reaches the password field"
    outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", f"the focused field shows a focus ring (outline {outline})"
    focused.send_keys(password, Keys.ENTER)
    text_in("#signed-in-as", user)


def sign_out():
    visible("#sign-out").click()
    visible("#login-form")
    names = [c["name"] for c in driver.get_cookies()]
    assert "panal_session" not in names, f"the session cookie is gone after sign-out: {names}"


try:
    # First load, measured by the browser itself.
    driver.get(f"{args.url}/ui/")
    ready()
    el("#books li")
    perf = driver.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        const ready = performance.getEntriesByName('panal-ready')[0];
        return {
          document_bytes: nav.transferSize,
          resource_bytes: res.reduce((n, r) => n + r.transferSize, 0),
          resources: res.map(r => r.name.replace(location.origin, '') + ' ' + r.transferSize),
          dom_interactive_ms: nav.domInteractive,
          dom_content_loaded_ms: nav.domContentLoadedEventEnd,
          load_ms: nav.loadEventEnd,
          console_ready_ms: ready ? ready.startTime : null,
        };""")
    shot("books")

    # The shopper.
    sign_in(args.url, "bob", "bob-demo-pass")
    shot("signed-in")
    search = visible("#search-form input[name=q]")
    search.clear()
    search.send_keys("le guin", Keys.ENTER)
    text_in("h1", "le guin")
    el("#books li a")
    shot("search")
    driver.find_element(By.CSS_SELECTOR, "#books li a").click()
    quantity = visible("#buy-form input[name=quantity]")
    shot("book")
    quantity.clear()
    quantity.send_keys("1")
    driver.find_element(By.CSS_SELECTOR, "#buy-form button[type=submit]").click()
    visible("#pay-form")
    shot("order")

    def pay(number):
        form = visible("#pay-form")
        for name, value in [("card_number", number), ("expiry", "12/39"), ("cvc", "123")]:
            field = form.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    pay("4000 0000 0000 0002")
    visible("#alert")
    text_in("#alert", "card_declined")
    print(f"  declined card: {driver.find_element(By.ID, 'alert').text!r}")
    shot("declined")
    pay("4242 4242 4242 4242")
    visible("#notice")
    el("[data-status=paid]")
    shot("paid")
    invoice = visible("#invoice-link")
    order_url = driver.current_url
    invoice.click()
    wait.until(lambda d: "/invoice" in d.current_url)
    text_in("body", "Invoice")
    shot("invoice")
    driver.get(order_url)
    ready()
    driver.get(f"{args.url}/ui/#/orders")
    el("#orders tbody tr")
    shot("orders")
    sign_out()
    shot("signed-out")

    # The admin, on another node.
    sign_in(args.other, "admin", args.admin_password)
    driver.get(f"{args.other}/ui/#/cluster")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")) == 3)
    leader = visible("#leader").text
    assert leader and leader != "none", f"a leader is shown: {leader!r}"
    rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")]

    def samples():
        return {c.get_attribute("data-node"): int(c.get_attribute("data-samples"))
                for c in driver.find_elements(By.CSS_SELECTOR, "#metrics li")}

    wait.until(lambda d: len(samples()) == 3 and all(n > 0 for n in samples().values()))
    before = samples()
    wait.until(lambda d: all(samples()[n] > before[n] for n in before))
    after = samples()
    shot("cluster")
    driver.set_window_size(390, 844)
    time.sleep(0.5)  # let the layout settle before the picture; nothing waits on it
    shot("cluster-phone")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    driver.set_window_size(1280, 900)
    sign_out()

    print(f"  cluster: 3 nodes, leader {leader}")
    for r in rows:
        print(f"    {r}")
    print(f"  live metrics samples per node: {before} -> {after}")
    print(f"  phone width 390 px: page scroll width {width} px")
    total = perf["document_bytes"] + perf["resource_bytes"]
    print(f"first load: {total} bytes transferred (document {perf['document_bytes']}, resources: "
          f"{', '.join(perf['resources'])})")
    print(f"first load: DOM interactive {perf['dom_interactive_ms']:.0f} ms, console ready (books listed) "
          f"{perf['console_ready_ms'] or 0:.0f} ms, load event {perf['load_ms']:.0f} ms")
    print(f"screenshots in {args.artifacts}: {', '.join(shots)}")
    with open(os.path.join(args.artifacts, "first-load.json"), "w") as f:
        json.dump(perf, f, indent=2)
    ok = total < 200 * 1024
    print("browser-test: PASS" if ok else f"browser-test: FAIL: first load {total} bytes >= 200 KB")
    sys.exit(0 if ok else 1)
except (TimeoutException, AssertionError) as e:
    shot("failure")
    alert = driver.find_elements(By.ID, "alert")
    print(f"browser-test: FAIL at {driver.current_url}: {type(e).__name__}: {e}")
    if alert:
        print(f"  alert box: {alert[0].text!r}")
    sys.exit(1)
finally:
    driver.quit()
