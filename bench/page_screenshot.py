"""Screenshot of the served page (docs/serve_page.png): a server on 127.0.0.1 with a checkpoint, headless
Chromium (Debian's chromium + chromium-driver, driven by selenium, as tests/test_serve_browser.py), one
caption, n images and the attention strip of the first.

    .venv/bin/python bench/page_screenshot.py --checkpoint runs/demo/gan.pt --out docs/serve_page.png
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="gan.pt to serve")
    parser.add_argument("--caption", default="a large orange cross in the center")
    parser.add_argument("--count", default="4", choices=("1", "2", "4", "8"), help="images to draw")
    parser.add_argument("--size", default="1100,1000", help="window width,height in pixels")
    parser.add_argument("--out", default="docs/serve_page.png")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        print(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install -y chromium chromium-driver", file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from attnfast.serving.launcher import ServerProcess
    profile = Path(tempfile.mkdtemp(prefix="page_screenshot_"))
    options = Options()
    options.binary_location = str(CHROMIUM)          # explicit: Selenium Manager never downloads
    for flag in FLAGS + [f"--window-size={args.size}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        with ServerProcess("--checkpoint", args.checkpoint) as server:
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 120)
            wait.until(ready.text_to_be_present_in_element((By.ID, "model-info"), "stage"))
            caption = browser.find_element(By.ID, "caption")
            caption.clear()
            caption.send_keys(args.caption)
            Select(browser.find_element(By.ID, "count")).select_by_visible_text(args.count)
            browser.find_element(By.ID, "generate").click()
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#attention-strip figure.word")) > 0)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#images img")) == int(args.count))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(args.out)
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
