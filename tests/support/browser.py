"""Open an HTML report in a real headless Chromium (Debian's `chromium` + `chromium-driver`) through selenium.

`check_report(path, screenshot)` loads ``file://<path>``, makes every ``<audio>`` element load its source
(one at a time: Chromium caps concurrent media loads) and waits until its first data is decoded, checks that
every ``<img>`` decoded, saves a screenshot and returns what it saw, including the browser's SEVERE log lines.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

APT_INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"

# Resolves to [{src, duration, readyState, error}] per <audio>, in page order.
LOAD_AUDIO_JS = """
const done = arguments[arguments.length - 1];
const timeoutMs = arguments[0];
const players = Array.from(document.querySelectorAll('audio'));
function load(audio) {
  return new Promise((resolve) => {
    const report = (why) => resolve({src: audio.currentSrc || audio.src, duration: audio.duration,
      readyState: audio.readyState, error: audio.error ? audio.error.code + ' ' + audio.error.message : why});
    const timer = setTimeout(() => report('timeout'), timeoutMs);
    audio.addEventListener('loadeddata', () => { clearTimeout(timer); report(null); }, {once: true});
    audio.addEventListener('error', () => { clearTimeout(timer); report('error event'); }, {once: true});
    audio.preload = 'auto';
    audio.load();
  });
}
(async () => { const out = []; for (const a of players) { out.push(await load(a)); } done(out); })();
"""

IMAGES_JS = """
return Array.from(document.images).map(
  (img) => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0}));
"""


@dataclass(frozen=True)
class PageCheck:
    audio: list[dict]  # {src, duration, readyState, error} per <audio>
    images: list[dict]  # {src, ok} per <img>
    severe_logs: list[dict]  # browser log entries at level SEVERE
    screenshot: Path


def chromium_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL."""
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(unquote(parsed.path))


def open_chromium(width: int = 1280, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binaries = chromium_binaries()
    assert binaries is not None, f"Chromium is not installed: {APT_INSTALL}"
    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=binaries[1]), options=options)


def check_report(
    report: Path,
    screenshot: Path,
    *,
    width: int = 1280,
    height: int = 900,
    timeout_ms: int = 15000,
    scroll_to: str | None = None,
) -> PageCheck:
    """Load ``report`` in headless Chromium, decode every audio source, screenshot the visible page (from the
    top, or from the element with id ``scroll_to``)."""
    driver = open_chromium(width, height)
    try:
        driver.get(Path(report).resolve().as_uri())
        driver.set_script_timeout(
            60 + timeout_ms / 1000 * max(1, len(driver.find_elements("tag name", "audio")))
        )
        audio = driver.execute_async_script(LOAD_AUDIO_JS, timeout_ms)
        images = driver.execute_script(IMAGES_JS)
        if scroll_to:
            driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", scroll_to)
        else:
            driver.execute_script("window.scrollTo(0, 0);")
        driver.save_screenshot(str(screenshot))
        severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    finally:
        driver.quit()
    return PageCheck(audio=audio, images=images, severe_logs=severe, screenshot=Path(screenshot))
