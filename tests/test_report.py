"""HTML reports: the building blocks (escaping, empty inputs, NaN, overwrite refusal), the
report of a reduced fit on real data rendered in a real headless browser, and
``difffit fit --report``."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from difffit import DifffitInputError
from difffit.cli import main
from difffit.report import bar_chart, fit_report, histogram, line_plot, page, table, write_report

# The real-data cases live in test_fit; its folder is on sys.path under any import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import data_file  # noqa: E402
from test_fit import CASES, random_move  # noqa: E402

NAN = float("nan")
SVG = "{http://www.w3.org/2000/svg}"


def xml(fragment: str) -> ET.Element:
    """Parse a fragment as XML: the plots must be well-formed to render as inline SVG."""
    return ET.fromstring(fragment)


# ----------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------


def test_table_escapes_and_formats():
    rows = [{"name": "<script>alert(1)</script>", "score": 0.123456, "n": 7, "big": 123456.0},
            {"name": "a & b", "score": NAN, "n": 8, "big": None, "extra": "x\"y"}]
    html = table(rows, caption="<b>caption</b>")
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a &amp; b" in html
    assert "&lt;b&gt;caption&lt;/b&gt;" in html
    root = xml(html)
    header = [th.text for th in root.iter("th")]
    assert header == ["name", "score", "n", "big", "extra"]  # every key, first-seen order
    cells = [[td.text or "" for td in tr.iter("td")] for tr in root.find("tbody")]
    assert cells[0][1:4] == ["0.1235", "7", "1.235e+05"]
    assert cells[1][1] == "n/a" and cells[1][3] == "" and cells[1][4] == 'x"y'
    # Chosen columns, in the given order; unknown ones empty.
    root = xml(table(rows, columns=["n", "missing"]))
    cells = [[td.text or "" for td in tr.iter("td")] for tr in root.find("tbody")]
    assert cells == [["7", ""], ["8", ""]]


def test_table_empty():
    root = xml(table([], columns=["rank", "score"], caption="nothing"))
    assert [th.text for th in root.iter("th")] == ["rank", "score"]
    assert [td.text for td in root.iter("td")] == ["(none)"]
    assert "(none)" in table([])


def _bar_counts(svg: str) -> list[int]:
    return [int(t.rsplit(":", 1)[1]) for t in re.findall(r"<title>([^<]*)</title></rect>", svg)]


def test_histogram_counts_nan_and_marks():
    values = np.r_[np.arange(100.0), NAN, np.inf]
    svg = histogram(values, bins=10, title="t <1>", xlabel="score",
                    marks={"#1 <best>": 99.0, "nan mark": NAN, "none mark": None})
    root = xml(svg)
    assert sum(_bar_counts(svg)) == 100  # every finite value in a bin, none twice
    assert "2 non-finite values left out" in svg
    marks = [e for e in root.iter(f"{SVG}line") if e.get("class") == "mark"]
    assert len(marks) == 1  # the NaN and None marks are not drawn
    assert "#1 &lt;best&gt;" in svg and "t &lt;1&gt;" in svg
    # Ticks with labels on both axes.
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "0" in labels and "count" in labels and "score" in labels


def test_histogram_degenerate_inputs():
    for values, why in (([], "no data"), ([NAN, NAN], "no finite values")):
        svg = histogram(values, title="empty")
        xml(svg)
        assert why in svg and "<rect class=\"bar\"" not in svg
    svg = histogram([3.0] * 5, bins=4)  # all equal: one bar holding all
    xml(svg)
    assert _bar_counts(svg) == [5]
    # A mark outside the values widens the axis rather than falling off it.
    svg = histogram([0.0, 1.0], marks={"far": 10.0})
    line = next(e for e in xml(svg).iter(f"{SVG}line") if e.get("class") == "mark")
    assert float(line.get("x1")) <= 640


def test_line_plot_gaps_legend_and_errors():
    svg = line_plot({"a <x>": ([0, 1, 2, 3], [1, 2, NAN, 4]), "empty": ([0, 1], [NAN, NAN]),
                     "median": ([0, 3], [0, 0])},
                    title="T", xlabel="iteration", ylabel="score", context={"median"})
    root = xml(svg)
    lines = [e for e in root.iter(f"{SVG}polyline")]
    # "a" is cut at its NaN into two runs (the lone last point also gets a dot); "empty"
    # has no finite point and is named in the caption instead.
    assert len([p for p in lines if p.find(f"{SVG}title").text == "a <x>"]) == 2
    assert len(list(root.iter(f"{SVG}circle"))) == 1
    assert "left out (no finite point): empty" in svg
    legend = [t.text for t in root.iter(f"{SVG}text")]
    assert "a <x>" in legend and "median" in legend and "empty" not in legend
    assert 'stroke-dasharray="5 3"' in svg  # the context series
    assert "no data" in line_plot({})
    with pytest.raises(DifffitInputError, match="3 x and 2 y"):
        line_plot({"bad": ([0, 1, 2], [0, 1])})


def test_bar_chart_highlight_negative_nan():
    labels = ["alpha", "beta <b>", "gamma", "a very long structure name indeed, over 28"]
    svg = bar_chart(labels, [0.5, -0.25, NAN, 0.1], title="B", xlabel="cam", highlight={0, 3})
    root = xml(svg)
    bars = [e for e in root.iter(f"{SVG}rect") if "bar" in (e.get("class") or "")]
    assert len(bars) == 3  # no bar for NaN
    assert sum("highlight" in e.get("class") for e in bars) == 2
    assert "n/a" in svg and "beta &lt;b&gt;" in svg and "…" in svg
    # The negative bar lies left of the positive ones' start (zero).
    x = {e.find(f"{SVG}title").text.split(":")[0]: float(e.get("x")) for e in bars}
    assert x["beta <b>"] < x["alpha"]
    assert "no finite values" in bar_chart(["a"], [NAN]) and "no data" in bar_chart([], [])
    with pytest.raises(DifffitInputError):
        bar_chart(["a", "b"], [1.0])


def test_page_is_self_contained_and_escaped():
    doc = page("Fit <of> & more", [("Results", table([{"a": 1}])), ("Results", "<p>x</p>"),
                                   ("Plot", histogram([1, 2, 3]))],
               meta={"command": "difffit fit <map>", "timings (s)": {"fit": 1.23456}})
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert "<title>Fit &lt;of&gt; &amp; more</title>" in doc
    assert "difffit fit &lt;map&gt;" in doc and "fit: 1.235" in doc
    # Nothing fetched from elsewhere, nothing to run.
    assert "<script" not in doc.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", doc)
    assert "<link" not in doc and "@import" not in doc
    ids = re.findall(r'<section id="([^"]+)"', doc)
    assert ids == ["results", "results-2", "plot"]  # unique anchors for repeated headings
    assert page("empty", []).count("<section") == 0


def test_write_report_refuses_to_overwrite(tmp_path):
    path = tmp_path / "r.html"
    assert write_report(path, "<p>first</p>") == path
    with pytest.raises(FileExistsError, match="overwrite"):
        write_report(path, "<p>second</p>")
    assert path.read_text() == "<p>first</p>"
    write_report(path, "<p>third</p>", overwrite=True)
    assert path.read_text() == "<p>third</p>"
    with pytest.raises(DifffitInputError, match="does not exist"):
        write_report(tmp_path / "missing" / "r.html", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary left


# ----------------------------------------------------------------------------------------
# A reduced fit on real data
# ----------------------------------------------------------------------------------------

REDUCED = dict(n_rotations=20, n_positions=5, n_iters=60, refine_iters=20)


@pytest.fixture(scope="module")
def daq_fit(shared_data):
    from difffit import fit
    from difffit.io import read_map, read_structure

    _, map_path, model_path, res, voxel = next(c for c in CASES if c[0] == "daq")
    dmap = read_map(data_file(shared_data, map_path), voxel_size=voxel)
    R0, t0 = random_move(7)
    model = read_structure(data_file(shared_data, model_path)).transformed(R0, t0)
    return fit(dmap, [model], res, **REDUCED)


class _Tables(HTMLParser):
    """Text of every table cell, per table (caption, rows), from an HTML document."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "caption":
            self._caption = True
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "caption":
            self._caption = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._caption:
            self.tables[-1]["caption"] += data


def _top_table(doc: str) -> list[list[str]]:
    """Rows (header first) of the "Top N placements" table of a report."""
    parser = _Tables()
    parser.feed(doc)
    return next(t for t in parser.tables if t["caption"].startswith("Top "))["rows"]


def _check_fit_report_html(doc: str, result, views: int = 3, view3d: bool = True) -> None:
    """The report of a one-structure fit lists its placements and holds its two plots, the
    map along three axes around its best ``views`` placements (traces drawn in) and, with
    ``view3d``, the Mol* view with its viewer loaded from beside the report."""
    from difffit.report.blocks import _fmt

    placements = result.for_structure(0)
    assert placements
    header, *rows = _top_table(doc)
    assert len(rows) == min(10, len(placements))
    col = {h: k for k, h in enumerate(header)}
    for row, p in zip(rows, placements):
        assert row[col["rank"]] == str(p.rank) and row[col["hits"]] == str(p.hits)
        assert row[col[f"score ({result.params.rank_by})"]] == _fmt(p.score)
    assert '<table class="meta">' in doc
    # Two plots: the histogram of all starts with the best clusters marked, and the
    # convergence lines (one per marked cluster, plus the median of all starts).
    assert len(re.findall(r'<svg[^>]*class="plot"', doc)) == 2
    n_views = 3 * min(views, len(placements))
    assert doc.count('<svg class="view"') == n_views
    assert doc.count('<image class="density"') == n_views
    assert len(re.findall(r'<polyline class="trace"', doc)) >= n_views
    assert ('id="molstar-view"' in doc and 'src="difffit_molstar/molstar.js"' in doc) == view3d
    n_marked = min(5, len(placements))
    assert len(re.findall(r'<line class="mark"', doc)) == n_marked
    assert len(re.findall(r'<polyline class="series"', doc)) == n_marked + 1
    assert f"best recorded score of each of {result.trajectory['score'].shape[1]} starts" in doc


def test_fit_report_content(daq_fit, tmp_path):
    path = fit_report(daq_fit, tmp_path / "report.html", command="difffit fit m.mrc s.pdb")
    doc = path.read_text()
    _check_fit_report_html(doc, daq_fit)
    assert "difffit fit m.mrc s.pdb" in doc and "n_rotations: 20" in doc
    with pytest.raises(FileExistsError):
        fit_report(daq_fit, path)
    fit_report(daq_fit, path, overwrite=True, top=2)
    assert len(_top_table(path.read_text())) == 1 + 2


def test_fit_report_without_trajectory(daq_fit, tmp_path):
    doc = fit_report(replace(daq_fit, trajectory={}), tmp_path / "r.html").read_text()
    assert "No trajectory recorded" in doc and not re.search(r'<svg[^>]*class="plot"', doc)
    assert len(_top_table(doc)) > 1


# ----------------------------------------------------------------------------------------
# In a real browser
# ----------------------------------------------------------------------------------------

_BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome",
             "google-chrome-stable", "chrome")


def _find_browser() -> str | None:
    """$DIFFFIT_BROWSER, or the first Chromium-family browser on PATH."""
    env = os.environ.get("DIFFFIT_BROWSER")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((b for b in map(shutil.which, _BROWSERS) if b), None)


@pytest.fixture(scope="module")
def browser():
    found = _find_browser()
    if found is None and os.environ.get("DIFFFIT_BROWSER"):
        pytest.skip(f"DIFFFIT_BROWSER={os.environ['DIFFFIT_BROWSER']} is not an executable")
    if found is None:
        pytest.skip("no headless browser found (tried $DIFFFIT_BROWSER and "
                    f"{', '.join(_BROWSERS)} on PATH); on Debian: "
                    "apt-get install chromium-headless-shell")
    return found


def _run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the page is
    # our own file. A private profile folder keeps parallel runs apart.
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
    return proc


def _png_pixels(data: bytes) -> np.ndarray:
    """[h, w, channels] uint8 of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes);
    a small decoder, so that the test needs no imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, "unsupported PNG"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    ch = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    kinds, filt = raw[:, 0], raw[:, 1:].reshape(h, w, ch).astype(np.int32)
    # Undo the per-row filters along anti-diagonals: pixel (y, x) needs only its left,
    # upper and upper-left neighbours, which all lie on earlier diagonals.
    out = np.zeros((h + 1, w + 1, ch), np.int32)  # a zero row and column before the image
    for d in range(h + w - 1):
        y = np.arange(max(0, d - w + 1), min(h, d + 1))
        x = d - y
        a, b, c = out[y + 1, x], out[y, x + 1], out[y, x]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        k = kinds[y][:, None]
        pred = np.select([k == 1, k == 2, k == 3, k == 4], [a, b, (a + b) // 2, paeth], 0)
        out[y + 1, x + 1] = (filt[y, x] + pred) % 256
    return out[1:, 1:].astype(np.uint8)


def test_png_decoder():
    """The decoder against a PNG written by hand with every filter type."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 4, 3), dtype=np.int32)
    rows = []
    for y, kind in enumerate(range(5)):
        cur = img[y]
        prev = img[y - 1] if y else np.zeros_like(cur)
        left = np.vstack([np.zeros((1, 3), np.int32), cur[:-1]])
        ul = np.vstack([np.zeros((1, 3), np.int32), prev[:-1]])
        p = left + prev - ul
        pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
        pred = [0, left, prev, (left + prev) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    assert np.array_equal(_png_pixels(png), img.astype(np.uint8))


@pytest.mark.slow
def test_report_renders_in_headless_browser(daq_fit, browser, tmp_path):
    # The tables and plots (the pictures: test_report_pictures_in_headless_browser).
    path = fit_report(daq_fit, tmp_path / "report.html", views=0, view3d=False)
    url = path.resolve().as_uri()

    # The DOM as the browser built it: the tables and both SVG plots survived parsing.
    dom = _run_browser(browser, tmp_path / "profile", "--dump-dom", url).stdout
    assert "<svg" in dom and "</html>" in dom
    _check_fit_report_html(dom, daq_fit, views=0, view3d=False)

    # A screenshot of the top of the page: not blank (the white page, text, table shading,
    # bars and coloured lines give many distinct colours), and drawn over its whole width.
    shot = tmp_path / "report.png"
    _run_browser(browser, tmp_path / "profile", f"--screenshot={shot}",
                 "--window-size=1000,1400", url)
    px = _png_pixels(shot.read_bytes())[..., :3]
    assert px.shape[:2] == (1400, 1000)
    colours = np.unique(px.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"screenshot looks blank: {len(colours)} colours"
    not_white = (px < 245).any(-1)
    assert 0.01 < not_white.mean() < 0.6
    # The plots' blue histogram bars (#9db4cf) are on screen, not just text.
    bar = np.all(np.abs(px.astype(int) - [0x9d, 0xb4, 0xcf]) <= 3, -1)
    assert bar.sum() > 500, "no histogram bars in the screenshot"


class _Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: JSON messages ending in NUL, the browser reading fd 3
    and writing fd 4), so that a test can wait for a script-built view to be ready and
    take a screenshot of one element (a screenshot flag alone fires at a fixed time).
    WebGL runs on SwiftShader, Chromium's software renderer (no GPU needed)."""

    def __init__(self, exe: str, profile: Path, width: int = 1000, height: int = 1400):
        to_r, self._w = os.pipe()
        self._r, from_w = os.pipe()

        def child():
            # Via spare numbers: dup2 onto the same number would keep close-on-exec.
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--use-angle=swiftshader",
             "--enable-unsafe-swiftshader", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=child, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self._session = b"", 0, None

    def call(self, method: str, timeout: float = 90, **params):
        import json
        import select
        import time

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self._session and not method.startswith("Target."):
            msg["sessionId"] = self._session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buf:
                left = end - time.monotonic()
                if left <= 0 or not select.select([self._r], [], [], left)[0]:
                    raise TimeoutError(f"browser: no answer to {method} in {timeout} s")
                chunk = os.read(self._r, 1 << 20)
                assert chunk, "the browser closed its pipe"
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:  # events and other replies are skipped
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 180):
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"browser: still false after {timeout} s: {expression}")

    def shot(self, selector: str) -> np.ndarray:
        """[h, w, 3] pixels of the element ``selector`` (first match), as on screen."""
        import base64

        box = self.eval(f"(() => {{ const r = document.querySelector({selector!r})"
                        ".getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY, "
                        "width: r.width, height: r.height, scale: 1}; })()")
        data = self.call("Page.captureScreenshot", format="png", clip=box,
                         captureBeyondViewport=True)["data"]
        return _png_pixels(base64.b64decode(data))[..., :3]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (AssertionError, OSError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


@pytest.mark.slow
def test_report_pictures_in_headless_browser(daq_fit, browser, tmp_path):
    """The map's projections with the traces, and the Mol* view, as the browser draws them:
    the DOM of both, and screenshots of both that are not blank."""
    path = fit_report(daq_fit, tmp_path / "report.html")
    assert (tmp_path / "difffit_molstar" / "molstar.js").stat().st_size > 4_000_000
    alone = tmp_path / "moved" / "report.html"  # the page without the viewer's folder
    alone.parent.mkdir()
    alone.write_text(path.read_text())
    chrome = _Chromium(browser, tmp_path / "profile")
    try:
        chrome.open(path.resolve().as_uri())
        state = chrome.wait("document.readyState === 'complete' && "
                            "document.getElementById('molstar-view').dataset.state !== 'loading'"
                            " && document.getElementById('molstar-view').dataset.state")
        assert state == "ready", chrome.eval("document.getElementById('molstar-view-note')"
                                             ".textContent")
        _check_fit_report_html(chrome.eval("document.documentElement.outerHTML"), daq_fit)
        canvas = chrome.eval("(() => { const c = document.querySelector('#molstar-view canvas');"
                             " return c ? [c.width, c.height] : null; })()")
        assert canvas and min(canvas) > 100, canvas
        # Every projection image decoded (an <image> with a broken data URI has no size).
        assert chrome.eval("[...document.querySelectorAll('svg.view image')].every("
                           "i => i.getBBox().width > 10)")

        # The 3D view: the density and the model drawn over Mol*'s plain background.
        px = chrome.shot("#molstar-view")
        flat = px.reshape(-1, 3).astype(int)
        colours, counts = np.unique(flat, axis=0, return_counts=True)
        background = colours[counts.argmax()]
        drawn = np.abs(flat - background).max(1) > 30
        assert len(colours) > 50 and 0.02 < drawn.mean() < 0.9, \
            f"3D view looks blank: {len(colours)} colours, {drawn.mean():.3f} drawn"

        # The projections: the map grey on black, the trace in its colour (#ffb000).
        px = chrome.shot("figure.views").astype(int)
        black = (px.max(-1) < 8).mean()
        trace = np.all(np.abs(px - [0xff, 0xb0, 0x00]) <= 12, -1).sum()
        grey = ((px.max(-1) - px.min(-1) < 6) & (px.max(-1) > 60)).mean()
        assert black > 0.05 and grey > 0.05 and trace > 100, (black, grey, trace)

        # Moved without its viewer's folder, the page says what is missing.
        chrome.open(alone.resolve().as_uri())
        assert chrome.wait("document.readyState === 'complete' && "
                           "document.getElementById('molstar-view').dataset.state") == "no-viewer"
        assert "difffit_molstar/" in chrome.eval(
            "document.getElementById('molstar-view-note').textContent")
    finally:
        chrome.close()



# ----------------------------------------------------------------------------------------
# difffit fit --report
# ----------------------------------------------------------------------------------------


def test_cli_report_flag(shared_data, tmp_path, capsys):
    _, map_path, model_path, res, _ = next(c for c in CASES if c[0] == "daq")
    args = ["fit", str(data_file(shared_data, map_path)), str(data_file(shared_data, model_path)),
            "-r", str(res), "--rotations", "10", "--positions", "3", "--iterations", "30", "-q"]
    out = tmp_path / "out"
    assert main([*args, "-o", str(out), "--report"]) == 0
    report = out / "report.html"
    assert f"report: {report}" in capsys.readouterr().out
    doc = report.read_text()
    assert "<svg" in doc and "Top " in doc and "--report" in doc  # the command is recorded
    assert "report.html" in (out / "log.txt").read_text()

    # Without the flag: no report.
    assert main([*args, "-o", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "report.html").exists()
