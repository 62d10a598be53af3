"""The `aver` verbs end to end on a small EmoDB subset: corpus add/list, ingest, extract, store ls/show/verify."""
import subprocess
import sys

import yaml

from conftest import shared_path


def aver(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_walkthrough(tmp_path):
    src = shared_path("data", "emodb", "wav")
    root = tmp_path / "mydata"
    root.mkdir()
    for f in sorted(src.glob("1[05]a01*.wav")):
        (root / f.name).symlink_to(f)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "paths": {"manifests": "m", "store": "s"},
        "corpora": {},
        "features": {"logmel": {"extractor": "logmel", "params": {"n_mels": 32}}},
        "extract": {"logmel-mine": {"feature_set": "logmel", "corpus": "mine"}},
    }))
    added = aver("corpus", "add", "mine", "--root", str(root), "--glob", "*.wav",
                 "--regex", r"(?P<speaker>\d\d)(?P<text>\w\d\d)(?P<emotion>[WLEAFTN])\w",
                 "--label", "W=angry", "--label", "L=boredom", "--label", "E=disgust", "--label", "A=fearful",
                 "--label", "F=happy", "--label", "T=sad", "--label", "N=neutral", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "mine" in aver("corpus", "list", cwd=tmp_path).stdout

    ingested = aver("ingest", "mine", cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr
    n = len(list(root.iterdir()))
    assert f"│ mine   │ {n}" in ingested.stdout

    extracted = aver("extract", cwd=tmp_path)
    assert extracted.returncode == 0, extracted.stderr
    listing = aver("store", "ls", cwd=tmp_path).stdout
    assert "logmel" in listing and f"│ {n}" in listing
    assert aver("store", "verify", cwd=tmp_path).returncode == 0
    shown = aver("store", "show", "logmel", "mine", cwd=tmp_path)
    assert '"n_mels": 32' in shown.stdout

    missing = aver("store", "show", "nope", "mine", cwd=tmp_path)
    assert missing.returncode == 2 and "no 'nope' files" in missing.stdout and "Traceback" not in missing.stdout
