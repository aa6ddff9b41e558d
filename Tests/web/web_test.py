#!/usr/bin/env python3
"""The web page in a real browser (run through Tests/web/web.sh, which provides selenium).

A real API and worker on a database of their own; Debian's chromium, headless, through chromedriver. The test
signs in with an API key, uploads two rendered pages at once, sees both reach FINISHED without a reload,
opens the first and checks that every drawn word box sits where result.json puts the word (scaled to the
picture as displayed), then opens the second, whose text and file name are HTML, and checks that both are
shown as literal text and that no script ran. Screenshots at 1280 and 390 px go to Tests/web/screenshots/.
"""
import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = os.path.join(ROOT, "deploy", "scripts", "pg.sh")
SHOTS = os.path.join(ROOT, "Tests", "web", "screenshots")
HOSTILE_TEXT = "<img src=x onerror=alert(1)>"
HOSTILE_NAME = "<img src=x onerror=alert(2)>.png"


def psql(database, sql):
    return subprocess.run([PG, "psql", "-d", database, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def render(path, lines, font="DejaVu-Sans"):
    arguments = ["/usr/bin/convert", "-size", f"1400x{110 * len(lines) + 80}", "xc:white", "-font", font,
                 "-pointsize", "44", "-fill", "black"]
    for index, line in enumerate(lines):
        arguments += ["-annotate", f"+50+{110 * index + 100}", line]
    subprocess.run(arguments + ["-depth", "8", f"png:{path}"], check=True)


def api(base, key, path):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


class Check:
    def __init__(self):
        self.problems = []
        self.passed = 0

    def __call__(self, condition, what):
        if condition:
            self.passed += 1
            print(f"web: ok   {what}")
        else:
            self.problems.append(what)
            print(f"web: FAIL {what}")
        return condition


def browser(width):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},1000",
                     "--hide-scrollbars", "--force-device-scale-factor=1"]:
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to run as root with its sandbox
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def set_width(driver, width, height=1000):
    """Makes the viewport (not the window, which may have borders) `width` × `height` CSS pixels."""
    driver.set_window_size(width, height)
    inner_width, inner_height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if (inner_width, inner_height) != (width, height):
        driver.set_window_size(2 * width - inner_width, 2 * height - inner_height)


def screenshot(driver, name, width):
    """The whole page at `width`: the window is made as tall as the document."""
    set_width(driver, width)
    time.sleep(0.3)
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    set_width(driver, width, min(max(height, 600), 6000))
    time.sleep(0.3)
    path = os.path.join(SHOTS, f"{name}-{width}.png")
    driver.save_screenshot(path)
    print(f"web: screenshot {os.path.relpath(path, ROOT)}")
    return path


def box_positions(driver):
    """Each word polygon's rectangle and its picture's, in CSS pixels, as the browser lays them out."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#pages figure.page')].map((figure) => {
          const img = figure.querySelector('img');
          const picture = img.getBoundingClientRect();
          return {
            page: Number(figure.dataset.page), width: Number(figure.dataset.width),
            natural: [img.naturalWidth, img.naturalHeight],
            picture: [picture.left, picture.top, picture.width, picture.height],
            words: [...figure.querySelectorAll('polygon.word')].map((polygon) => {
              const r = polygon.getBoundingClientRect();
              return { line: Number(polygon.dataset.line), word: Number(polygon.dataset.word),
                       label: polygon.getAttribute('aria-label'), rect: [r.left, r.top, r.width, r.height] };
            }),
          };
        });
    """)


def check_boxes(check, driver, result, width):
    pages = box_positions(driver)
    check(len(pages) == len(result["pages"]), f"{width} px: one figure per page ({len(pages)})")
    for shown, page in zip(pages, result["pages"]):
        words = [(li, wi, w) for li, line in enumerate(page["lines"]) for wi, w in enumerate(line["words"])]
        check(len(shown["words"]) == len(words) > 0, f"{width} px: page {page['number']}: {len(words)} words, {len(shown['words'])} boxes drawn")
        natural_w, natural_h = shown["natural"]
        check(max(natural_w, natural_h) <= 1600 and natural_w > 0, f"page {page['number']}: the preview is {natural_w} × {natural_h} (long side ≤ 1600)")
        left, top, picture_w, picture_h = shown["picture"]
        scale_x, scale_y = picture_w / page["width"], picture_h / page["height"]
        worst = 0.0
        for drawn in shown["words"]:
            word = page["lines"][drawn["line"]]["words"][drawn["word"]]
            xs = [p[0] for p in word["polygon"]]
            ys = [p[1] for p in word["polygon"]]
            expected = [left + min(xs) * scale_x, top + min(ys) * scale_y,
                        (max(xs) - min(xs)) * scale_x, (max(ys) - min(ys)) * scale_y]
            worst = max(worst, *(abs(a - b) for a, b in zip(drawn["rect"], expected)))
            if not drawn["label"].startswith(word["text"] + ", confidence "):
                check(False, f"page {page['number']}: box labelled {drawn['label']!r} for word {word['text']!r}")
        check(worst <= 1.0, f"{width} px: page {page['number']}: every box within 1 px of result.json scaled by {scale_x:.3f} (worst {worst:.2f} px)")


def open_job(driver, job_id):
    """Clicks the job's button in the list (the list may be redrawn by its poll meanwhile: then again)."""
    for _ in range(5):
        try:
            driver.find_element(By.CSS_SELECTOR, f"li[data-job-id='{job_id}'] button.open").click()
            return
        except StaleElementReferenceException:
            time.sleep(0.2)
    raise RuntimeError(f"could not click job {job_id} in the list")


def wait_ready(driver, job_id):
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "const v = document.querySelector('#job'); return !v.hidden && v.dataset.jobId === arguments[0] && v.dataset.ready === 'true'",
        job_id))


def run(check, base, key, storage):
    os.makedirs(SHOTS, exist_ok=True)
    plain = os.path.join(storage, "letter.png")
    hostile = os.path.join(storage, HOSTILE_NAME)
    render(plain, ["Lector reads this letter.", "Dear reader, the quick brown fox", "jumps over 13 lazy dogs."])
    render(hostile, [HOSTILE_TEXT, "Markup must stay text."], font="DejaVu-Sans-Mono")

    driver = browser(1280)
    try:
        driver.get(base + "/")
        check("Lector" in driver.title, "the page loads at /")
        screenshot(driver, "sign-in", 1280)
        driver.find_element(By.ID, "api-key").send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "app").is_displayed())
        check(driver.execute_script("return sessionStorage.getItem('lector.apiKey')") == key, "the key is kept in sessionStorage")
        check(key not in driver.current_url, "the key is not in the URL")
        # A marker that a reload would wipe out.
        driver.execute_script("window.lectorNoReload = 'still here'")

        # Dropping files onto the zone chooses them (a synthetic drop: WebDriver cannot drag from the desktop).
        driver.execute_script("""
            const data = new DataTransfer();
            data.items.add(new File(['x'], 'dropped-1.png', { type: 'image/png' }));
            data.items.add(new File(['y'], 'dropped-2.png', { type: 'image/png' }));
            document.querySelector('#drop-zone').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
        """)
        check(driver.find_element(By.ID, "chosen").text == "2 files chosen: dropped-1.png, dropped-2.png", "dropping two files chooses them")
        Select(driver.find_element(By.ID, "mode")).select_by_value("document")
        # hOCR and the searchable PDF are made only when asked for: ask, so that all four downloads exist.
        for box in driver.find_elements(By.CSS_SELECTOR, "input[name=format]"):
            box.click()
        driver.find_element(By.ID, "files").send_keys(plain + "\n" + hostile)
        check("2 files chosen" in driver.find_element(By.ID, "chosen").text, "two files chosen with the picker")
        driver.find_element(By.ID, "upload-button").click()
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#job-list li.job")) == 2)
        check(True, "both uploads appear in the job list")
        seen = set()

        def both_finished(d):
            states = d.execute_script("return [...document.querySelectorAll('#job-list li.job')].map(li => li.dataset.status)")
            seen.update(states)
            return states == ["FINISHED", "FINISHED"]

        WebDriverWait(driver, 120, poll_frequency=0.2).until(both_finished)
        check(True, f"both jobs reach FINISHED in the list (states seen: {sorted(seen)})")
        check(driver.execute_script("return window.lectorNoReload") == "still here", "...without a reload")
        names = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#job-list button.open")]
        check(names == [HOSTILE_NAME, "letter.png"] or names == ["letter.png", HOSTILE_NAME],
              f"the list shows the file names literally, newest first: {names}")
        check(driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0, "no element was made from the hostile name")
        # The list's thumbnails load (object URLs of the signed thumbnail links).
        WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#job-list .thumb img")) == 2)
        check(True, "each finished job shows its thumbnail")
        for width in (1280, 390):
            screenshot(driver, "jobs", width)
        set_width(driver, 1280)

        jobs = {li.find_element(By.CSS_SELECTOR, "button.open").text: li.get_attribute("data-job-id")
                for li in driver.find_elements(By.CSS_SELECTOR, "#job-list li.job")}
        listed = json.loads(api(base, key, "/v1/jobs?limit=10"))
        check({j["id"] for j in listed["jobs"]} == set(jobs.values()), "the page lists what GET /v1/jobs does")

        # The plain page: boxes against result.json.
        letter = jobs["letter.png"]
        open_job(driver, letter)
        wait_ready(driver, letter)
        result = json.loads(api(base, key, f"/v1/jobs/{letter}/result?format=json"))
        check("Lector" in result["text"], f"the letter was read: {result['text'][:40]!r}…")
        check_boxes(check, driver, result, 1280)
        formats = sorted(a.get_attribute("data-format") for a in driver.find_elements(By.CSS_SELECTOR, "#downloads a"))
        check(formats == ["hocr", "json", "pdf", "txt"], f"download links for txt, json, hocr and pdf: {formats}")
        href = driver.find_element(By.CSS_SELECTOR, "#downloads a[data-format=txt]").get_attribute("href")
        check("/files/" in href and "signature=" in href and key not in href, "download links are signed /files links, without the key")
        with urllib.request.urlopen(href, timeout=10) as response:
            check(response.read().decode() == result["text"], "the txt link serves the text")
        # With the keyboard only: from the back button, Tab passes the four download links and reaches the first word.
        driver.execute_script("document.querySelector('#back').focus()")
        stops = []
        for _ in range(8):
            ActionChains(driver).send_keys(Keys.TAB).perform()
            stops.append(driver.execute_script("const e = document.activeElement; return e.tagName + ':' + (e.dataset.format || e.getAttribute('aria-label') || '')"))
            if stops[-1].startswith("polygon"):
                break
        word = result["pages"][0]["lines"][0]["words"][0]
        check(stops[:4] == ["A:txt", "A:json", "A:hocr", "A:pdf"] and stops[-1].startswith(f"polygon:{word['text']}, confidence"),
              f"Tab walks the downloads, then the words: {stops}")
        info = driver.find_element(By.ID, "word-info").text
        check(word["text"] in info and "confidence" in info, f"focusing a word shows it and its confidence: {info!r}")
        ActionChains(driver).send_keys(Keys.TAB).perform()
        second = result["pages"][0]["lines"][0]["words"][1]
        check(second["text"] in driver.find_element(By.ID, "word-info").text, "the next Tab moves to the next word")
        screenshot(driver, "letter", 1280)
        screenshot(driver, "letter", 390)
        check_boxes(check, driver, result, 390)
        set_width(driver, 1280)

        # The hostile page: its text shown as text, nothing run.
        driver.find_element(By.ID, "back").click()
        hostile_id = jobs[HOSTILE_NAME]
        open_job(driver, hostile_id)
        wait_ready(driver, hostile_id)
        result = json.loads(api(base, key, f"/v1/jobs/{hostile_id}/result?format=json"))
        page_text = result["pages"][0]["text"]
        check("<img" in page_text and ">" in page_text, f"the hostile page was read as markup: {page_text.splitlines()[0]!r}")
        shown = driver.execute_script("return document.querySelector('#pages pre.page-text').textContent")
        check(shown == page_text, f"the page shows exactly the recognised text: {shown.splitlines()[0]!r}")
        check(driver.find_element(By.ID, "job-title").text == HOSTILE_NAME, "the job's title is the file name, literally")
        labels = [p.get_attribute("aria-label") for p in driver.find_elements(By.CSS_SELECTOR, "polygon.word")]
        check(any(label.startswith("<img") for label in labels), "the first word's label is literal markup")
        check(driver.execute_script("return document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0,
              "no element was made from the hostile text")
        try:
            alert = driver.switch_to.alert
            check(False, f"no script ran (an alert is open: {alert.text!r})")
        except NoAlertPresentException:
            check(True, "no script ran (no alert)")
        screenshot(driver, "hostile", 1280)
        screenshot(driver, "hostile", 390)

        # Keyboard: from the back button, Tab reaches the downloads, then the words.
        set_width(driver, 1280)
        driver.find_element(By.ID, "back").click()
        WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "jobs").is_displayed())
        focused = driver.execute_script("return document.activeElement.getAttribute('aria-label') || ''")
        check(focused.startswith(f"Open {HOSTILE_NAME}"), f"going back puts the focus on the job it came from: {focused!r}")

        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        for entry in errors:
            print(f"web: console: {entry['message']}")
        check(not errors, "no errors in the browser console (CSP violations included)")
    finally:
        driver.quit()

    with urllib.request.urlopen(base + "/", timeout=10) as response:
        policy = response.headers.get("Content-Security-Policy", "")
    check("script-src 'self'" in policy and "unsafe-inline" not in policy, f"/ is served with a CSP without inline script: {policy[:60]}…")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("LECTOR_WEB_PORT", "18591")))
    parser.add_argument("--binary", default=os.environ.get("LECTOR_BIN", os.path.join(ROOT, ".build", "debug", "lector")))
    args = parser.parse_args()

    pg_port = os.environ.get("LECTOR_PG_PORT", "54329")
    database = f"lector_web_{secrets.token_hex(4)}"
    # The cluster of `make test`, or one already listening on the port (another checkout's): start it only when
    # nothing answers there.
    if subprocess.run([PG, "psql", "-d", "postgres", "-tAc", "SELECT 1"], capture_output=True).returncode != 0:
        subprocess.run([PG, "start"], check=True, capture_output=True)
    psql("postgres", f"CREATE DATABASE {database}")
    storage = tempfile.mkdtemp(prefix="lector-web-")
    env = dict(os.environ, LECTOR_DATABASE_URL=f"postgres://lector@127.0.0.1:{pg_port}/{database}",
               LECTOR_STORAGE_ROOT=storage, LECTOR_HTTP_PORT=str(args.port), LECTOR_LOG_LEVEL="warning",
               LECTOR_WORKER_POLL_INTERVAL="0.2", LECTOR_RATE_LIMIT="1000", LECTOR_RATE_BURST="1000", OMP_THREAD_LIMIT="1")
    api_process = worker = None
    check = Check()
    try:
        subprocess.run([args.binary, "migrate", "--directory", os.path.join(ROOT, "db")], env=env, check=True, capture_output=True)
        key = subprocess.run([args.binary, "keys", "create", "--user", "web"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        api_process = subprocess.Popen([args.binary, "serve"], env=env, stderr=open(os.path.join(storage, "api.log"), "wb"))
        worker = subprocess.Popen([args.binary, "work"], env=env, stderr=open(os.path.join(storage, "worker.log"), "wb"))
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        run(check, base, key, storage)
    except Exception as error:  # a timeout or a missing element: report it as a problem, then clean up
        check(False, f"the run stopped: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    finally:
        for process in (api_process, worker):
            if process is not None:
                process.terminate()
        for process in (api_process, worker):
            if process is not None:
                process.wait(timeout=60)
        psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    print(f"web: checks={check.passed + len(check.problems)} problems={len(check.problems)} screenshots={os.path.relpath(SHOTS, ROOT)}/")
    if check.problems:
        print(f"web: logs in {storage}", file=sys.stderr)
        return 1
    shutil.rmtree(storage, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
