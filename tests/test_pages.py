"""The segmentation page of ``samr1 serve`` (``GET /``), driven in a real browser (Debian's Chromium).

The server is the real app on a loopback free port with the shipped tiny-shapes SAM; with a policy it is the
real tiny Qwen2.5-VL whose output is fixed per question through generation (``ScriptedText``: it is untrained).
What the page draws is checked on the pixels of a screenshot: the mask colour must be there, about as many
pixels as the server's mask, and gone when the mask is switched off.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _browser import chrome, colour_pixels, requires_browser, screenshot_rgb, unlabelled_controls, wait_for
from _markers import requires_serve
from PIL import Image

from samr1.pipeline import ReasoningSegmenter, ScriptedText

MASK_RGB = (255, 0, 170)  # samr1/view/static/common.js MASK_RGB
QUESTION = "the blue block"


class Scripted(ReasoningSegmenter):
    """The real tiny policy; what it writes is fixed per question (an untrained policy never parses)."""

    script: dict[str, str] = {}

    def segment_batch(self, images, queries, **kw):
        texts = [self.script.get(q, "<think>no idea</think>") for q in queries]
        return super().segment_batch(images, queries, prefix_allowed_tokens_fn=ScriptedText(self.processor.tokenizer,
                                                                                          texts), **kw)


def _picture(path, h=120, w=160, seed=0):
    """A grey picture with one blue block (no pixel near the mask colour), saved as PNG; returns the block box."""
    rng = np.random.default_rng(seed)
    img = (200 + rng.integers(-8, 9, (h, w, 3))).astype(np.uint8)
    y1, x1 = h // 4, w // 4
    y2, x2 = y1 + h // 2, x1 + w // 2 - 4
    img[y1:y2, x1:x2] = (30, 50, 170)
    Image.fromarray(img).save(path)
    return x1, y1, x2, y2


def _serve(app):
    from samr1.serve import ServerThread

    return ServerThread(app)


def _overlay_pixels(driver):
    from selenium.webdriver.common.by import By

    return colour_pixels(screenshot_rgb(driver.find_element(By.ID, "canvas")), MASK_RGB)


def _check_overlay(driver):
    """Opacity to 100 % with the keyboard; the painted mask is then the mask colour, about as many (CSS) pixels
    as the server's mask times the display scale; switched off, the colour is gone."""
    from selenium.webdriver.common.by import By

    n = int(re.search(r"Mask of (\d+) pixels", driver.find_element(By.ID, "summary").text).group(1))
    assert n > 100
    driver.find_element(By.ID, "opacity").send_keys("\ue010")  # End
    assert driver.find_element(By.ID, "opacity-value").text == "100 %"
    canvas = driver.find_element(By.ID, "canvas")
    scale = canvas.size["width"] / int(canvas.get_attribute("width"))
    on = _overlay_pixels(driver)
    # the box outline and the points are drawn over part of the mask; edges are resampled
    assert 0.6 * n * scale**2 < on < 1.2 * n * scale**2, (on, n, scale)
    driver.find_element(By.ID, "show-mask").send_keys(" ")
    assert _overlay_pixels(driver) < 0.01 * on
    driver.find_element(By.ID, "show-mask").send_keys(" ")
    assert _overlay_pixels(driver) == pytest.approx(on, rel=0.02)


@requires_serve
def test_page_files_are_served_without_a_token_and_nothing_else(shapes_engine):
    """The page and its files need no token (the API calls they make do); only the listed files are served."""
    import json
    import urllib.error
    import urllib.request

    from samr1 import serve

    def get(url):
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type"), exc.read()

    app = serve.create_app(shapes_engine, config=serve.ServerConfig(token="t"))
    with _serve(app) as srv:
        status, ctype, body = get(srv.url + "/")
        assert status == 200 and ctype.startswith("text/html") and b"<title>samr1 segment</title>" in body
        for name, kind in (("common.js", "text/javascript"), ("segment.js", "text/javascript"), ("style.css", "text/css")):
            status, ctype, body = get(f"{srv.url}/static/{name}")
            assert status == 200 and ctype.startswith(kind) and body, name
        for bad in ("/static/nope.js", "/static/..%2Fapp.py", "/static/__init__.py"):
            status, _, body = get(srv.url + bad)
            assert status == 404 and json.loads(body)["error"], bad
        health = json.loads(get(srv.url + "/healthz")[2])
        assert health["token_required"] is True and health["policy"] is False
        assert health["limits"]["max_side"] == serve.ServerConfig().limits.max_side
        assert get(srv.url + "/segment")[0] in (401, 405)  # the API itself still wants the token


@requires_serve
@requires_browser
def test_ask_the_policy_with_a_token(shapes_engine, tiny_policy, tmp_path):
    from selenium.webdriver.common.by import By

    from samr1 import serve

    _, model, processor = tiny_policy
    x1, y1, x2, y2 = _picture(tmp_path / "block.png")
    s = 840 / 160, 840 / 120
    box = [round(x1 * s[0]), round(y1 * s[1]), round(x2 * s[0]), round(y2 * s[1])]
    cx, cy = round((x1 + x2) / 2 * s[0]), round((y1 + y2) / 2 * s[1])
    seg = Scripted(model, processor, shapes_engine, template="Find {query}.", max_new_tokens=200)
    seg.script = {QUESTION: f'<think>a blue block in the middle</think><answer>{{"bbox": {box}, '
                            f'"points_1": [{cx}, {cy}], "points_2": [{cx}, {cy}]}}</answer>'}
    app = serve.create_app(shapes_engine, segmenter=seg, config=serve.ServerConfig(token="s3cret"))
    driver = chrome()
    try:
        with _serve(app) as srv:
            driver.get(srv.url + "/")
            wait_for("the server status", lambda: "policy" in driver.find_element(By.ID, "server-status").text)
            assert "needs a bearer token" in driver.find_element(By.ID, "server-status").text
            assert not unlabelled_controls(driver)
            assert driver.find_element(By.ID, "mode-query").is_selected()
            driver.find_element(By.ID, "image").send_keys(str(tmp_path / "block.png"))
            wait_for("the image", lambda: "loaded" in driver.find_element(By.ID, "summary").text)
            driver.find_element(By.ID, "token").send_keys("wrong")
            driver.find_element(By.ID, "query").send_keys(QUESTION + "\n")  # Enter sends the question
            err = wait_for("the error", lambda: driver.find_element(By.ID, "error").text)
            assert "401" in err and "wrong bearer token" in err
            tok = driver.find_element(By.ID, "token")
            tok.clear()
            tok.send_keys("s3cret")
            driver.find_element(By.ID, "query").click()  # leaving the field stores the token for this tab
            driver.find_element(By.ID, "submit").click()
            wait_for("the mask", lambda: "Mask of" in driver.find_element(By.ID, "summary").text, timeout=120)
            assert not driver.find_element(By.ID, "error").is_displayed()
            assert driver.find_element(By.ID, "think").text == "a blue block in the middle"
            assert "box (x1, y1, x2, y2)" in driver.find_element(By.ID, "parsed").text
            stages = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#timings tbody th")]
            assert "generate" in stages and "total" in stages
            _check_overlay(driver)
            # the token was entered once: a reload of the page keeps it (session storage)
            driver.refresh()
            wait_for("the reloaded page", lambda: "policy" in driver.find_element(By.ID, "server-status").text)
            assert driver.find_element(By.ID, "token").get_attribute("value") == "s3cret"
    finally:
        driver.quit()


@requires_serve
@requires_browser
def test_sam_alone_box_drawn_with_the_mouse_and_the_size_limit(shapes_engine, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from samr1 import serve
    from samr1.serve import Limits

    x1, y1, x2, y2 = _picture(tmp_path / "block.png")
    Image.fromarray(np.zeros((150, 260, 3), np.uint8)).save(tmp_path / "wide.png")
    app = serve.create_app(shapes_engine, config=serve.ServerConfig(limits=Limits(max_side=200)))
    driver = chrome()
    try:
        with _serve(app) as srv:
            driver.get(srv.url + "/")
            wait_for("the server status", lambda: "SAM alone" in driver.find_element(By.ID, "server-status").text)
            assert driver.find_element(By.ID, "mode-box").is_selected()
            assert not driver.find_element(By.ID, "mode-query").is_enabled()
            assert not unlabelled_controls(driver)
            # over the server's size limit: its own message is shown
            driver.find_element(By.ID, "image").send_keys(str(tmp_path / "wide.png"))
            wait_for("the image", lambda: "260 x 150" in driver.find_element(By.ID, "summary").text)
            driver.find_element(By.ID, "box").send_keys("10,10,100,100\n")  # Enter submits
            err = wait_for("the error", lambda: driver.find_element(By.ID, "error").text)
            assert "400" in err and "at most 200 px a side" in err
            # the block: its box dragged on the canvas, a click adds a point
            driver.find_element(By.ID, "image").send_keys(str(tmp_path / "block.png"))
            wait_for("the image", lambda: "160 x 120" in driver.find_element(By.ID, "summary").text)
            canvas = driver.find_element(By.ID, "canvas")
            k = canvas.size["width"] / 160

            def at(x, y):  # image pixels -> offset from the canvas centre, in CSS pixels
                return round(x * k - canvas.size["width"] / 2), round(y * k - canvas.size["height"] / 2)

            (ActionChains(driver).move_to_element_with_offset(canvas, *at(x1 - 1, y1 - 1)).click_and_hold()
             .move_to_element_with_offset(canvas, *at((x1 + x2) / 2, (y1 + y2) / 2))
             .move_to_element_with_offset(canvas, *at(x2 + 1, y2 + 1)).release()
             .move_to_element_with_offset(canvas, *at((x1 + x2) / 2, (y1 + y2) / 2)).click().perform())
            drawn = [float(v) for v in driver.find_element(By.ID, "box").get_attribute("value").split(",")]
            assert drawn == pytest.approx([x1 - 1, y1 - 1, x2 + 1, y2 + 1], abs=2)
            point = [float(v) for v in driver.find_element(By.ID, "points").get_attribute("value").split(",")]
            assert point == pytest.approx([(x1 + x2) / 2, (y1 + y2) / 2], abs=2)
            driver.find_element(By.ID, "submit").click()
            wait_for("the mask", lambda: "Mask of" in driver.find_element(By.ID, "summary").text, timeout=120)
            assert not driver.find_element(By.ID, "error").is_displayed()
            _check_overlay(driver)
    finally:
        driver.quit()
