"""The HTML run report: every section in a saved report, the last interpretation reused, and the report in a real
browser (headless Chromium) at desktop and phone widths.

In the browser, each width: every image decoded, nothing wider than the window (a wide table scrolls inside its own box, the
page does not), every piece of text at least 12 px; a screenshot of the whole page is kept in the test's
temporary folder (``pytest --basetemp=DIR`` to look at it). The browser test is skipped, with the reason, where Debian's
``chromium`` package is not installed (``apt-get install -y chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest
from conftest import make_image_folder
from helpers import learner_with_data

from easytransfer import ImageData, transfer_learner
from easytransfer.tasks.classification.report import SECTIONS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
NEEDS_BROWSER = pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: apt-get install -y chromium")

WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
MIN_FONT_PX = 12

# Runs in the report once everything is loaded and sends what it found, as JSON, to the page around it (which
# writes it into its <title>, read back with --dump-dom); nothing it does changes the report's layout.
CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => { for (let p = el.parentElement; p; p = p.parentElement) {
    if (["auto", "scroll"].includes(getComputedStyle(p).overflowX)) return true; } return false; };
  const images = [...document.images];
  const wide = [...document.body.querySelectorAll("*")]
    .filter((el) => el.getBoundingClientRect().right > width + 1 && !scrolls(el))
    .map((el) => el.tagName + (el.id ? "#" + el.id : "") + " " + Math.round(el.getBoundingClientRect().right));
  const small = [...document.body.querySelectorAll("*")]
    .filter((el) => [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()))
    .filter((el) => parseFloat(getComputedStyle(el).fontSize) < %(min_font)d)
    .map((el) => el.tagName + " " + getComputedStyle(el).fontSize + " " + el.textContent.trim().slice(0, 30));
  parent.postMessage(JSON.stringify({
    width: width,
    page_width: document.documentElement.scrollWidth,
    page_height: document.documentElement.scrollHeight,
    images: images.length,
    broken_images: images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt),
    too_wide: wide.slice(0, 20),
    small_text: small.slice(0, 20),
  }), "*");
});
</script>
""" % {"min_font": MIN_FONT_PX}


def chromium(*args: str) -> str:
    """Run headless Chromium with `args`; its standard output."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def frame(page: Path, width: int, height: int, out: Path) -> Path:
    """A page at `out` showing `page` in a `width` x `height` px frame: headless Chromium's window is at least
    500 px wide, so a phone's width is a frame's."""
    out.write_text(f'<!DOCTYPE html><html><head><title>waiting</title><style>body{{margin:0}}</style></head><body>'
                   f'<iframe src="{page.as_uri()}" style="width:{width}px;height:{height}px;border:0;display:block">'
                   '</iframe><script>addEventListener("message", (e) => {document.title = e.data;});</script>'
                   '</body></html>')
    return out


def measure(report: Path, width: int, height: int, tmp_path: Path) -> dict:
    """Open a copy of `report` with `CHECK_SCRIPT` in a `width` x `height` px frame; the script's findings."""
    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    page = frame(checked, width, height, tmp_path / "measure.html")
    dom = chromium(f"--window-size={max(width, 500)},{height}", "--virtual-time-budget=10000", "--dump-dom",
                   page.as_uri())
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert title != "waiting", "the report never finished loading"
    return json.loads(html.unescape(title))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A run report of a tiny learner (3 classes of 40 px images, random-init EfficientNet), with an LR sweep."""
    root = make_image_folder(tmp_path_factory.mktemp("images"), classes=("cat", "dog", "fox"), per_class=6)
    learn = transfer_learner(ImageData.from_folder(root, valid_pct=0.34, seed=0, bs=4, size=48), "test_efficientnet",
                             pretrained=False)
    learn.lr_find(num_it=10)
    learn.fit_frozen(2, lr=1e-2)
    return learn.save_report(tmp_path_factory.mktemp("report") / "report.html", top_k=4)


@NEEDS_BROWSER
@pytest.mark.parametrize("device", WIDTHS)
def test_report_reads_well_in_a_browser(report, device, tmp_path):
    width, height = WIDTHS[device]
    found = measure(report, width, height, tmp_path)
    assert found["width"] <= width and found["images"] >= 5, found
    assert found["broken_images"] == [], found
    assert found["page_width"] <= found["width"], f"the page scrolls sideways at {width} px: {found['too_wide']}"
    assert found["too_wide"] == [], found
    assert found["small_text"] == [], f"text under {MIN_FONT_PX} px: {found['small_text']}"
    shot = tmp_path / f"report-{device}.png"
    page_height = min(found["page_height"], 16000)
    chromium(f"--window-size={max(width, 500)},{page_height}", "--virtual-time-budget=10000", f"--screenshot={shot}",
             frame(report, width, page_height, tmp_path / "shot.html").as_uri())
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_save_report_reuses_the_last_interpretation_and_shows_small_rates(tmp_path, monkeypatch):
    from easytransfer.tasks.classification import interpretation as interpret_module

    learn = learner_with_data(make_image_folder(tmp_path / "images", per_class=8), test_pct=0.25)
    learn.fit_frozen(1, lr=3e-5)
    learn.evaluate()
    calls = []
    original = interpret_module.Interpretation.from_learner.__func__
    monkeypatch.setattr(interpret_module.Interpretation, "from_learner",
                        classmethod(lambda cls, *a, **k: calls.append(1) or original(cls, *a, **k)))
    text = learn.save_report(tmp_path / "report.html").read_text()
    assert calls == []  # no second inference
    assert "4 images (test split)" in text
    peak = learn.history["lr_0"].iloc[0]
    assert peak < 1e-4 and f"<td>{peak:.1e}</td>" in text  # was rounded to 0.0000


class _SectionIds(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.append(dict(attrs).get("id"))


@pytest.fixture(scope="module")
def report_section_ids(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    dls = ImageData.from_folder(make_image_folder(tmp / "images", per_class=4), bs=4, size=32, valid_pct=0.25, seed=0)
    learn = transfer_learner(dls, "test_resnet", pretrained=False)
    learn.fit_frozen(1, lr=1e-2)
    parser = _SectionIds()
    parser.feed(learn.save_report(tmp / "report.html").read_text(encoding="utf-8"))
    plt.close("all")
    return parser.ids


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_report_section_is_in_a_saved_report(section, report_section_ids):
    assert section in report_section_ids


def test_report_titles_put_the_tasks_sections_between_the_shared_ones():
    from easytransfer.evaluate.html_report import CLOSING_SECTIONS, LEADING_SECTIONS, report_titles

    titles = report_titles({"scores": "Scores of the task"})
    keys = list(titles)
    assert keys[: len(LEADING_SECTIONS)] == list(LEADING_SECTIONS)
    assert keys[-len(CLOSING_SECTIONS):] == list(CLOSING_SECTIONS)
    assert titles["scores"] == "Scores of the task"
