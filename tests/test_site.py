"""The leaderboard site (issue 16, items 1 and 4): ``surfbench site`` -> report/<profile>/site/.

Fast tests build a site from a small synthetic results store (no training):

* every row of ``leaderboard.json`` agrees with the ``metrics.json`` files it names (one seed: the
  run's mean and bootstrap interval; two seeds: the mean of the seeds' means), and every metric of
  every table's runs has a row;
* the site references nothing outside itself: no ``http(s)://`` or ``//`` in any ``src``/``href``/
  CSS ``url()``/``@import``, and every relative link resolves to a file of the site;
* the index has every table, with the best / second-best marks of the table model, "n/a" cells
  with their reasons; the run pages show config.yaml and the hashes; the listening page's WAV files
  are the saved examples (aligned to the references, one gain per example).

The slow test opens the site built from ci-profile results in a real headless browser (Debian's
``chromium`` + ``chromium-driver``, Selenium): every table renders, a click on a column header
re-sorts it, a run page shows its config, an ``<audio>`` element loads and reports a positive
duration, and the browser console has no error.  Results: ``SURFBENCH_SITE_WORKDIR=DIR`` (a folder in
which the ci pipeline ran, e.g. ``snakemake --directory DIR tables --configfile config/ci.yaml``)
is used as it is; otherwise a subset of the ci pipeline (MNIST MixIT, SURF (ReMixIT) and Average,
Libri2Mix Average) runs in a temporary folder (about 1.5 min on 2 cores).  Screenshots go to
``SURFBENCH_SITE_SHOTS`` (default: the test's temporary folder).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from surfbench.config import load_config
from surfbench.report.tables import build_model
from surfbench.results import write_run_results

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a synthetic results store
def _metric(values, hib=True):
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sem": float(v.std(ddof=1) / np.sqrt(v.size)),
            "ci95": [float(v.mean() - 0.3), float(v.mean() + 0.2)], "n": int(v.size), "higher_is_better": hib,
            "kind": "item", "available": True, "reason": "", "spread": None, "n_missing": 0}


def _na(reason, hib=False, kind="set"):
    return {"mean": None, "sem": None, "ci95": [None, None], "n": 0, "higher_is_better": hib, "kind": kind,
            "available": False, "reason": reason, "spread": None}


INFO = {"mixit": ("MixIT", False, False, "S. Wisdom et al., 2020"),
        "surf_remixit": ("SURF (ReMixIT)", False, True, "SURF, 2026"),
        "supervised_regression": ("Supervised Regression", True, False, "-"),
        "average": ("Average", False, False, "-")}


def _write_run(res: Path, dataset: str, method: str, seed: int, protocol: str, metrics: dict, items: dict,
               examples: dict | None = None, variant: str = "") -> Path:
    d = res / "ci" / dataset / (method + (f"@{variant}" if variant else "")) / f"seed{seed}"
    out = d / "table2" if protocol == "table2" else d
    d.mkdir(parents=True, exist_ok=True)
    domain = "audio" if dataset == "libri2mix" else "image"
    cfg = {"method": method, "dataset": dataset, "seed": seed, "domain": domain, "variant": variant,
           "training": {"ema_alpha": 0.9, "batch_size": 8, "beta_schedule": {"kind": "linear"}},
           "data": {"sample_rate": 16000} if domain == "audio" else {}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    if examples is not None:
        np.savez(d / "examples.npz", **examples)
    name, sup, gen, cit = INFO[method]
    header = {"profile": "ci", "dataset": dataset, "method": method, "variant": variant, "seed": seed,
              "protocol": protocol, "config_hash": f"cfg{method}{seed}", "dataset_hash": f"ds{dataset}",
              "model_hash": f"model{method}{seed}", "n_items": len(next(iter(items.values()))) if items else 8,
              "n_mixtures": 4, "runtime_s": 1.5,
              "method_info": {"display_name": name, "supervised": sup, "generative": gen, "citation": cit},
              "scoring_note": "", "environment": None, "training_environments": None}
    df = pd.DataFrame({"mixture": np.repeat(np.arange(4), 2)[: len(next(iter(items.values())))] if items else [],
                       "slot": np.tile([0, 1], 4)[: len(next(iter(items.values())))] if items else [], **items})
    return write_run_results(out, header=header, items=df, metrics=metrics)


def _audio_examples(rng, n=3, t=4000, swap=False):
    src = rng.normal(0, 0.3, (n, 2, t)).astype(np.float32)
    est = src[:, ::-1].copy() if swap else src.copy()
    return {"mixtures": src.sum(1), "sources": src, "estimates": est}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small results store: MNIST (two methods, MixIT with two seeds), CIFAR-10 Table 2, Libri2Mix audio."""
    from surfbench.report.site import build_site

    root = tmp_path_factory.mktemp("site")
    res = root / "results"
    rng = np.random.default_rng(0)
    for method, base in (("mixit", 12.0), ("surf_remixit", 14.0), ("supervised_regression", 20.0)):
        seeds = (0, 1) if method == "mixit" else (0,)
        for seed in seeds:
            psnr = base + seed + rng.normal(0, 1, 8)
            _write_run(res, "mnist", method, seed, "table1",
                       {"psnr": _metric(psnr), "ssim": _metric(rng.uniform(0.2, 0.6, 8)),
                        "lpips": _na("LPIPS weights not installed (surfbench weights --fetch)", kind="item"),
                        "fid": _na("FID needs the Inception weights")},
                       {"psnr": psnr, "ssim": rng.uniform(0.2, 0.6, 8), "lpips": [np.nan] * 8})
    _write_run(res, "cifar10", "mixit", 0, "table2",
               {"is": _na("Inception weights missing", hib=True), "fid": _na("Inception weights missing")}, {})
    ex = _audio_examples(rng)
    for method, swap, sdr in (("mixit", True, 3.0), ("surf_remixit", False, 5.0)):
        e = dict(ex, estimates=ex["sources"][:, ::-1].copy() if swap else ex["sources"].copy())
        vals = sdr + rng.normal(0, 1, 8)
        _write_run(res, "libri2mix", method, 0, "table4",
                   {"si_sdr": _metric(vals), "estoi": _metric(rng.uniform(0.3, 0.5, 8)),
                    "pesq": _metric(rng.uniform(1, 2, 8)), "dnsmos": _metric(rng.uniform(2, 3, 8))},
                   {"si_sdr": vals, "estoi": rng.uniform(0.3, 0.5, 8)}, examples=e)
    cfg = load_config(ROOT / "config" / "ci.yaml", overrides={"paths": {"results": str(res),
                                                                         "report": str(root / "report")}})
    site = build_site(cfg, workdir=root)
    return {"root": root, "res": res, "site": site, "cfg": cfg, "examples": ex}


# ----------------------------------------------------------------------------- helpers
class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []   # (tag, attribute, value)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.tags.append((tag, d))
        for a in ("src", "href", "poster", "data", "action", "srcset"):
            if d.get(a):
                self.refs.append((tag, a, d[a]))


def external_references(site: Path) -> list[str]:
    """Every reference of the site's pages to something outside the site (``scheme://``, ``//host``)."""
    bad = []
    for p in site.rglob("*"):
        if p.suffix not in (".html", ".css", ".js", ".svg"):
            continue
        text = p.read_text(errors="replace")
        parser = _Refs()
        parser.feed(text)
        for tag, attr, val in parser.refs:
            v = val.strip()
            if re.match(r"^[a-z][a-z0-9+.-]*:", v, re.I) and not v.lower().startswith(("data:", "#")) or v.startswith("//"):
                bad.append(f"{p.relative_to(site)}: <{tag} {attr}={v!r}>")
        for m in re.finditer(r"(?:url\(\s*['\"]?|@import\s+['\"]?)(https?:|//)", text, re.I):
            bad.append(f"{p.relative_to(site)}: CSS {m.group(0)!r}")
        # scripts and style sheets load nothing from outside either (a URL in a footnote's text is no reference)
        for block in re.findall(r"<(?:script|style)\b[^>]*>(.*?)</(?:script|style)>", text, re.I | re.S):
            for m in re.finditer(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", block, re.I):
                bad.append(f"{p.relative_to(site)}: script/style {m.group(0)!r}")
    return bad


def _cells(site: Path) -> str:
    return (site / "index.html").read_text()


# ----------------------------------------------------------------------------- fast tests
def test_leaderboard_rows_agree_with_metrics_json(synthetic):
    site, res = synthetic["site"], synthetic["res"]
    lb = json.loads((site / "leaderboard.json").read_text())
    rows = lb["rows"]
    assert lb["profile"] == "ci" and rows
    seen = set()
    for r in rows:
        assert {"table", "dataset", "method", "variant", "metric", "value", "interval95", "n_items", "n_seeds",
                "seeds", "provenance"} <= set(r), r
        blobs = [json.loads((res / p["metrics_json"]).read_text()) for p in r["provenance"]]
        assert blobs, f"row without provenance: {r}"
        assert sorted(b["seed"] for b in blobs) == r["seeds"] and len(r["seeds"]) == r["n_seeds"] or not r["available"]
        for b, p in zip(blobs, r["provenance"]):
            assert (b["dataset"], b["method"]) == (r["dataset"], r["method"])
            assert p["model_hash"] == b["model_hash"] and p["config_hash"] == b["config_hash"]
            assert p["git_commit"] == b["git_commit"]
        ms = [b["metrics"][r["metric"]] for b in blobs]
        if not r["available"]:
            assert r["value"] is None and r["reason"] and all(r["reason"].find(m["reason"]) >= 0 for m in ms)
            continue
        assert math.isclose(r["value"], np.mean([m["mean"] for m in ms]), rel_tol=1e-12), r
        assert r["n_items"] == sum(m["n"] for m in ms)
        if len(ms) == 1:
            assert r["interval95"] == ms[0]["ci95"] and r["interval_kind"] == "bootstrap over items"
        else:  # the t-interval over the seeds' means, around their mean
            lo, hi = r["interval95"]
            assert lo < r["value"] < hi and math.isclose((lo + hi) / 2, r["value"]) and r["interval_kind"] == "t over seeds"
        seen.add((r["table"], r["dataset"], r["method"], r["metric"]))
    # every available metric of the store's main runs is in some row
    for p in res.glob("ci/**/metrics.json"):
        b = json.loads(p.read_text())
        table = {"table1": "1", "table2": "2", "table4": "4"}[b["protocol"]]
        for name, m in b["metrics"].items():
            if m["available"]:
                assert (table, b["dataset"], b["method"], name) in seen, (p, name)
    # the mixit MNIST row has two seeds
    row = next(r for r in rows if (r["table"], r["dataset"], r["method"], r["metric"]) == ("1", "mnist", "mixit", "psnr"))
    assert row["seeds"] == [0, 1] and row["n_seeds"] == 2


def test_site_has_no_external_references_and_links_resolve(synthetic):
    site = synthetic["site"]
    assert external_references(site) == []
    for p in site.rglob("*.html"):
        parser = _Refs()
        parser.feed(p.read_text())
        for tag, attr, val in parser.refs:
            if val.startswith(("#", "data:")):
                continue
            target = (p.parent / val.split("#")[0]).resolve()
            assert target.is_file(), f"{p.relative_to(site)}: <{tag} {attr}={val!r}> does not resolve"


def test_external_reference_check_catches_a_cdn(tmp_path):
    (tmp_path / "index.html").write_text('<html><head><script src="https://cdn.example/x.js"></script>'
                                         "<style>@import url(//fonts.example/f.css);</style></head>"
                                         "<body><p>weights from https://download.example/w.pth</p>"
                                         "<script>fetch('https://api.example.com/x')</script></body></html>")
    bad = external_references(tmp_path)
    assert any("cdn.example" in b for b in bad) and any("CSS" in b for b in bad)
    assert any("api.example.com" in b for b in bad) and not any("download.example" in b for b in bad)


def test_index_has_every_table_marks_and_na_reasons(synthetic):
    from surfbench.report.build import profile_notes, table_rows
    from surfbench.report.reference import load_reference

    site, cfg = synthetic["site"], synthetic["cfg"]
    text = _cells(site)
    parser = _Refs()
    parser.feed(text)
    tables = [d.get("data-table") for tag, d in parser.tags if tag == "table" and "data-table" in d]
    assert tables == ["1", "2", "3", "4", "9"]                      # ci's tables and Table 3 (the paper's only)
    # the best unsupervised MNIST PSNR is SURF (ReMixIT), not the supervised row (as in the LaTeX tables)
    ours = table_rows(cfg, cfg["paths"]["results"])
    model = build_model("1", ours, load_reference(), "ci", profile_notes(cfg))
    best = [(rm.name, c.ours_plain()) for rm in model.rows for c in rm.cells if c.mark == "best"]
    assert best and all(name != "Supervised Regression" for name, _ in best)
    for name, value in best:
        assert re.search(r'<span class="best"><a href="[^"]+">' + re.escape(value) + "</a></span>", text), (name, value)
    # n/a with its reason (tooltip and footnote), the paper's number beside ours, seeds and intervals
    assert "LPIPS weights not installed (surfbench weights --fetch)" in text
    assert re.search(r'title="n/a: LPIPS weights not installed[^"]*"><span class="na">n/a<sup>[a-z]+</sup>', text)
    assert "(26.02)" in text                                         # the paper's MNIST Supervised Regression PSNR
    assert " · 2 seeds" in text and "one seed, no interval" not in text and re.search(r'class="sub">\[[0-9.]+, [0-9.]+\]', text)
    assert "<script>" in text and "th.sortable" in text


def test_run_pages_show_config_hashes_and_distributions(synthetic):
    site, res = synthetic["site"], synthetic["res"]
    page = site / "runs" / "mnist--mixit--seed1.html"
    text = page.read_text()
    cfg_text = (res / "ci" / "mnist" / "mixit" / "seed1" / "config.yaml").read_text()
    import html as _html

    assert _html.escape(cfg_text, quote=True) in text and 'id="config"' in text
    from surfbench.registry import registry

    citation = _html.escape(registry().get("mixit").citation)       # the registry's, not the stored copy's
    for needle in ("cfgmixit1", "dsmnist", "modelmixit1", citation, "unsupervised", "1.5 s"):
        assert needle in text, needle
    assert (site / "runs" / "mnist--mixit--seed1-table1-items.png").stat().st_size > 1000
    assert "mnist--mixit--seed0.html" in text                         # the other seed is linked
    # a Table 2 evaluation (set-level metrics only) shares its seed folder's page
    t2 = (site / "runs" / "cifar10--mixit--seed0.html").read_text()
    assert "protocol table2" in t2 and "Inception weights missing" in t2


def test_listening_page_writes_the_saved_examples(synthetic):
    import soundfile as sf

    site, ex = synthetic["site"], synthetic["examples"]
    text = (site / "listen.html").read_text()
    n_audio = text.count("<audio ")
    assert n_audio == 3 * (1 + 2 + 2 * 2)                           # 3 examples: mixture, 2 refs, 2 methods x 2
    src = ex["sources"]
    peak = max(np.abs(ex["mixtures"][0]).max(), np.abs(src[0]).max())
    gain = 0.95 / peak if peak > 0.95 else 1.0
    x, sr = sf.read(site / "audio" / "libri2mix" / "ex0" / "mixit_s1.wav")
    assert sr == 16000 and x.shape == (4000,)
    # MixIT's saved slots are swapped: the page shows them in the references' order
    assert np.abs(x - src[0, 0] * gain).max() < 2 / 32768
    m, _ = sf.read(site / "audio" / "libri2mix" / "ex0" / "mixture.wav")
    assert np.abs(m - ex["mixtures"][0] * gain).max() < 2 / 32768
    assert (site / "audio" / "libri2mix" / "ex2" / "surf_remixit_s2.png").is_file()
    assert not (site / "audio" / "mnist").exists()                   # images are not audio


def test_rebuild_replaces_the_site_and_cli_runs(synthetic, tmp_path):
    cfg = synthetic["cfg"]
    site = synthetic["site"]
    stale = site / "stale.html"
    stale.write_text("old")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "surfbench.cli", "site", "--config-json", json.dumps(cfg),
                           "--listen", "1"], cwd=synthetic["root"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(str(Path(cfg["paths"]["report"]) / "ci" / "site"))
    assert not stale.exists() and (site / "index.html").is_file()
    assert (site / "listen.html").read_text().count("<audio ") == 1 + 2 + 2 * 2
    assert not list(site.parent.glob(".site.*"))                     # no temporary folder left behind


# ----------------------------------------------------------------------------- the browser (slow)
CI_SUBSET = ["results/ci/mnist/mixit/seed0/metrics.json", "results/ci/mnist/surf_remixit/seed0/metrics.json",
             "results/ci/mnist/average/seed0/metrics.json", "results/ci/libri2mix/average/seed0/metrics.json"]


@pytest.fixture(scope="session")
def ci_workdir(tmp_path_factory):
    """A folder with ci-profile results: $SURFBENCH_SITE_WORKDIR, else a subset of the ci pipeline run here."""
    given = os.environ.get("SURFBENCH_SITE_WORKDIR")
    if given:
        d = Path(given)
        assert (d / "results" / "ci").is_dir(), f"SURFBENCH_SITE_WORKDIR={given}: no results/ci in it"
        return d
    d = tmp_path_factory.mktemp("ci-site")
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(d), "--cores", "2", *CI_SUBSET,
           "--configfile", str(ROOT / "config" / "ci.yaml")]  # --configfile takes several values: last
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    print(f"ci subset pipeline: {time.time() - t0:.0f} s")
    assert proc.returncode == 0, f"ci subset pipeline failed:\n{proc.stderr[-4000:]}"
    runs = [str(d / Path(p).parent) for p in CI_SUBSET if "/mnist/" in p]
    subprocess.run([sys.executable, "-m", "surfbench.cli", "figure", "--dataset", "mnist", "--runs", *runs,
                    "--out", str(d / "report" / "ci" / "figures" / "mnist.png")], cwd=d, check=True,
                   env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True)
    return d


@pytest.fixture
def browser():
    """A headless Chromium driven by Selenium, or a skip saying exactly what is missing (checked before any
    results are built)."""
    driver = _browser_or_skip()
    yield driver
    driver.quit()


def _browser_or_skip():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed in this environment (pip install -e '.[test]' installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None:
        pytest.skip("no chromium on PATH: Debian's browser is needed (apt-get install chromium chromium-driver)")
    if driver is None:
        pytest.skip("no chromedriver on PATH: Debian's chromium-driver is needed (apt-get install chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--no-first-run",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    except Exception as e:  # a browser that cannot start here is an environment problem, said exactly
        pytest.skip(f"chromium ({chromium}) with chromedriver ({driver}) did not start: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_site_in_a_headless_browser(browser, ci_workdir, tmp_path):
    from selenium.webdriver.common.by import By

    from surfbench.report.site import build_site

    cfg = load_config(ROOT / "config" / "ci.yaml")
    t0 = time.time()
    site = build_site(cfg, workdir=ci_workdir, out=tmp_path / "site")
    print(f"site build: {time.time() - t0:.1f} s, "
          f"{sum(p.stat().st_size for p in site.rglob('*') if p.is_file()) / 1e6:.1f} MB")
    assert external_references(site) == []
    shots = Path(os.environ.get("SURFBENCH_SITE_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    driver = browser
    errors: list = []

    def console():
        for e in driver.get_log("browser"):
            if e.get("level") == "SEVERE":
                errors.append(e)

    def shot(name, full=True):
        if full:
            h = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, min(max(int(h), 600), 6000))
        driver.save_screenshot(str(shots / f"{name}.png"))
        driver.set_window_size(1400, 1000)

    driver.get(site.joinpath("index.html").as_uri())
    console()
    shot("index-top", full=False)
    tables = driver.find_elements(By.CSS_SELECTOR, "table.lb[data-table]")
    expected = [t for t in ("1", "2", "3", "4", "9") if t in {str(x) for x in cfg["tables"]} | {"3"}]
    assert [t.get_attribute("data-table") for t in tables] == expected
    for t in tables:
        assert t.is_displayed() and len(t.find_elements(By.CSS_SELECTOR, "tr.data")) > 0
    # sorting: Table 1's MNIST PSNR, best first, then reversed, then the paper's order again
    t1 = driver.find_element(By.ID, "table1")
    th = t1.find_element(By.CSS_SELECTOR, "th.sortable[data-col]:not([data-col=order])")
    col = int(th.get_attribute("data-col"))

    def column():
        out = []
        for tr in t1.find_elements(By.CSS_SELECTOR, "tbody:first-of-type tr.data"):
            v = tr.find_elements(By.CSS_SELECTOR, "td")[col].get_attribute("data-v")
            out.append((tr.get_attribute("data-order"), float(v) if v else None))
        return out

    before = column()
    vals = [v for _, v in before if v is not None]
    assert len(vals) >= 2, f"Table 1's first column has {len(vals)} values: nothing to sort"
    th.click()
    after = column()
    got = [v for _, v in after if v is not None]
    assert got == sorted(vals, reverse=th.get_attribute("data-hib") == "1"), after
    assert all(v is not None for _, v in after[: len(got)])     # values first, empty cells last
    assert th.get_attribute("aria-sort") in ("ascending", "descending")
    shot("index-sorted-table1", full=False)
    th.click()
    assert [v for _, v in column() if v is not None] == sorted(vals, reverse=th.get_attribute("data-hib") != "1")
    t1.find_element(By.CSS_SELECTOR, "th[data-col=order]").click()
    assert [int(o) for o, _ in column()] == sorted(int(o) for o, _ in before)
    console()
    shot("index-full")
    # a run page, reached by clicking a value
    link = t1.find_element(By.CSS_SELECTOR, "td.num a")
    href = link.get_attribute("href")
    link.click()
    assert driver.current_url == href
    pre = driver.find_element(By.ID, "config")
    assert pre.is_displayed() and "method:" in pre.text and "training:" in pre.text
    img = driver.find_element(By.CSS_SELECTOR, "p.figure img")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    console()
    shot("run-page")
    # figures
    driver.get(site.joinpath("figures.html").as_uri())
    for im in driver.find_elements(By.CSS_SELECTOR, "p.figure img"):
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) > 0
    console()
    shot("figures")
    # the listening page: an <audio> element loads and has a positive duration
    driver.get(site.joinpath("listen.html").as_uri())
    audios = driver.find_elements(By.TAG_NAME, "audio")
    assert audios, "no <audio> element on the listening page"
    driver.set_script_timeout(30)
    duration = driver.execute_async_script(
        "var a = arguments[0], done = arguments[arguments.length - 1];"
        "if (a.readyState >= 1) { done(a.duration); return; }"
        "a.addEventListener('loadedmetadata', function () { done(a.duration); });"
        "a.addEventListener('error', function () { done(-1); });"
        "a.load();", audios[-1])
    assert duration and duration > 0, f"audio duration {duration}"
    for im in driver.find_elements(By.CSS_SELECTOR, "table.listen img")[:5]:
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) > 0
    console()
    shot("listen")
    assert not errors, "browser console errors:\n" + "\n".join(str(e) for e in errors)


def test_imported_runs_say_where_they_came_from(synthetic, tmp_path):
    """A run brought in by ``surfbench import`` (its imported.json, tied to its metrics.json by sha256) is
    marked on its run page and in leaderboard.json; a stale note (metrics.json recomputed since) is not."""
    import hashlib
    import shutil

    from surfbench.report.site import build_site

    res = tmp_path / "results"
    shutil.copytree(synthetic["res"], res)
    seed1 = res / "ci" / "mnist" / "mixit" / "seed1"
    sha = hashlib.sha256((seed1 / "metrics.json").read_bytes()).hexdigest()
    (seed1 / "imported.json").write_text(json.dumps({"label": "lab B", "bundle": "b.tar.gz", "metrics_sha256": sha}))
    seed0 = res / "ci" / "mnist" / "mixit" / "seed0"
    (seed0 / "imported.json").write_text(json.dumps({"label": "stale", "metrics_sha256": "0" * 64}))
    cfg = {**synthetic["cfg"], "paths": {**synthetic["cfg"]["paths"], "results": str(res),
                                         "report": str(tmp_path / "report")}}
    site = build_site(cfg, workdir=tmp_path, n_listen=0)
    page1 = (site / "runs" / "mnist--mixit--seed1.html").read_text()
    assert "imported from lab B (bundle b.tar.gz)" in page1
    assert "imported from" not in (site / "runs" / "mnist--mixit--seed0.html").read_text()
    rows = json.loads((site / "leaderboard.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    prov = {p["seed"]: p["imported_from"] for r in rows if r["dataset"] == "mnist" and r["method"] == "mixit"
            for p in r["provenance"]}
    assert prov == {0: "", 1: "lab B (bundle b.tar.gz)"}
