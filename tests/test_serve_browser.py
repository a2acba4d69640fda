"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) loads the page of a real server, types a caption, waits for the images and the attention
strip, moves the interpolation slider, and saves screenshots under the test's tmp dir."""
import shutil
from pathlib import Path

import pytest
from test_train import damsm_checkpoint, gan_checkpoint  # noqa: F401 - fixtures

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1100,1400"]


def _browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements.txt)")
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install -y chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = str(CHROMIUM)          # explicit: Selenium Manager never downloads
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.mark.slow
def test_page_draws_images_attention_and_interpolation(tmp_path, gan_checkpoint):
    pytest.importorskip("fastapi", reason="the server needs fastapi (requirements.txt)")
    from attnfast.serving.launcher import ServerProcess
    browser = _browser(tmp_path)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as ready
        from selenium.webdriver.support.ui import Select, WebDriverWait
        with ServerProcess("--checkpoint", str(gan_checkpoint), "--max-batch", "8") as server:
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 120)
            wait.until(ready.text_to_be_present_in_element((By.ID, "model-info"), "2 stage(s)"))
            caption = browser.find_element(By.ID, "caption")
            caption.clear()
            caption.send_keys("a large zebra red circle in the center")
            Select(browser.find_element(By.ID, "count")).select_by_visible_text("2")
            browser.find_element(By.ID, "generate").click()
            words = ["a", "large", "red", "circle", "in", "the", "center"]           # zebra: unknown, dropped
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#attention-strip figure.word")) == len(words))
            images = browser.find_elements(By.CSS_SELECTOR, "#images img")
            assert len(images) == 2
            assert all(img.get_attribute("src").startswith("data:image/png;base64,") for img in images)
            assert all(browser.execute_script("return arguments[0].naturalWidth", img) == 128 for img in images)
            shown = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#attention-strip figure.word figcaption")]
            assert shown == words
            assert "zebra" in browser.find_element(By.ID, "unknown").text
            browser.save_screenshot(str(tmp_path / "page_images.png"))

            browser.find_element(By.ID, "interpolate").click()
            wait.until(ready.visibility_of_element_located((By.ID, "path")))
            first = browser.find_element(By.ID, "path-image").get_attribute("src")
            slider = browser.find_element(By.ID, "beta")
            for _ in range(8):
                slider.send_keys(Keys.ARROW_RIGHT)
            assert browser.find_element(By.ID, "beta-label").text.startswith("beta = 1.00")
            assert browser.find_element(By.ID, "path-image").get_attribute("src") != first
            browser.save_screenshot(str(tmp_path / "page_interpolation.png"))
        assert (tmp_path / "page_images.png").stat().st_size > 10_000
    finally:
        browser.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
