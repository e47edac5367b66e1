"""The review page (issue 18 item 4) in a real browser: Debian's headless Chromium driven by
Selenium through Debian's chromedriver, against ``tagfleet api`` on the real PostgreSQL and
moto's S3. It shows a queued image and the model's proposal; confirming stores a human
label, picking another label with a digit key stores that one and rejects the proposal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_harness import ApiProcess, make_key
from harness import image_bytes
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from consumers.domain import AssetResult, SourcePosition
from consumers.store import TagStore
from consumers.store.models import human_labels, review_items

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCORES = {"circle": 0.48, "square": 0.41, "triangle": 0.11}


def _queue(store: TagStore, asset_id: str, tenant: str) -> None:
    """A stored classify result and its review item (what the consumer's flagging writes)."""
    result = {
        "type": "classify",
        "version": "v1",
        "label": "circle",
        "score": SCORES["circle"],
        "scores": SCORES,
    }
    store.save(
        [
            AssetResult(
                asset_id=asset_id,
                uri=asset_id,
                etag="e",
                width=96,
                height=72,
                functions={"shape": result},
                source=SourcePosition("assets", 0, 1),
                processed_at=datetime(2026, 12, 1, tzinfo=UTC),
                tenant=tenant,
            )
        ]
    )
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(review_items),
            [
                {
                    "tenant": tenant,
                    "asset_id": asset_id,
                    "uri": asset_id,
                    "function": "shape",
                    "type": "classify",
                    "reason": "low_margin",
                    "label": "circle",
                    "score": SCORES["circle"],
                    "scores": SCORES,
                    "model_version": "v1",
                    "created_at": datetime.now(UTC),
                    "status": "open",
                }
            ],
        )


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: infra/setup.sh installs Debian's chromium"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: webdriver.Chrome, condition: Any, what: str, timeout_s: float = 60) -> Any:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(condition, what)


def _labels(engine: sa.Engine) -> set[tuple[str, str, str, str]]:
    h = human_labels.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(h.asset_id, h.label, h.decision, h.actor)).all()
    return {tuple(r) for r in rows}  # type: ignore[misc]


def _shows_item(driver: webdriver.Chrome, asset_id: str) -> bool:
    """The card shows ``asset_id`` with its proposal and its image loaded."""
    return bool(
        driver.execute_script(
            "const img = document.getElementById('image');"
            "return !document.getElementById('card').hidden"
            " && document.getElementById('asset').textContent === arguments[0]"
            " && img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0;",
            asset_id,
        )
    )


def test_the_review_page_shows_the_image_and_stores_answers(
    browser: webdriver.Chrome, pg_url: str, s3: Any, new_bucket: Any, tmp_path: Path
) -> None:
    bucket = new_bucket()
    first, second = f"s3://{bucket}/a/one.png", f"s3://{bucket}/b/two.png"
    s3.put_object(Bucket=bucket, Key="a/one.png", Body=image_bytes(0))
    s3.put_object(Bucket=bucket, Key="b/two.png", Body=image_bytes(5))
    store = TagStore(pg_url)
    store.upgrade()
    _queue(store, first, "acme")
    _queue(store, second, "acme")
    api = ApiProcess(tmp_path / "api.log", pg_url)
    key = make_key(pg_url, "acme", "label", name="librarian")
    try:
        browser.get(api.base + "/review")
        browser.find_element(By.ID, "key").send_keys(key)
        browser.find_element(By.ID, "start").click()
        _wait(browser, lambda d: _shows_item(d, first), "the first item with its image")
        assert browser.find_element(By.ID, "proposal").text == "circle"
        scores = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#scores li")]
        assert scores == ["circle 0.480", "square 0.410", "triangle 0.110"]

        browser.find_element(By.ID, "confirm").click()
        _wait(browser, lambda d: _shows_item(d, second), "the second item after confirming")
        assert (first, "circle", "present", "librarian") in _labels(store.engine)

        # A digit picks that label of the list instead: square here.
        browser.find_element(By.TAG_NAME, "body").send_keys("2")
        _wait(
            browser,
            lambda d: "queue is empty" in d.find_element(By.ID, "status").text,
            "the queue empty after the second answer",
        )
        assert {
            (second, "square", "present", "librarian"),
            (second, "circle", "absent", "librarian"),
        } <= _labels(store.engine)
        with store.engine.connect() as conn:
            statuses = conn.execute(sa.select(review_items.c.status)).scalars().all()
        assert statuses == ["answered", "answered"]
    finally:
        api.stop()
        store.close()
