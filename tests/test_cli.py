"""The `aver` verbs end to end on a small EmoDB subset: corpus add/list, ingest, extract, store ls/show/verify."""
import subprocess
import sys

import pytest
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


def main(monkeypatch, *args):
    """`aver ARGS` in this process: (exit code, stdout)."""
    import io

    from pipelines import cli
    from pipelines.cli import common
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)      # the console writes to sys.stdout (its `file` stays unset)
    monkeypatch.setattr(sys, "argv", ["aver", *args])
    monkeypatch.setattr(common, "DEBUG", {"traceback": False})
    try:
        cli.main()
    except SystemExit as e:
        return e.code, out.getvalue()
    return 0, out.getvalue()


def test_user_mistakes_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"manifests": str(tmp_path / "m"), "store": str(tmp_path / "s")},
                                      "features": {"mel": {"extractor": "logmel", "params": {"n_mel": 32}}}}))
    code, out = main(monkeypatch, "extract", "nope", "-c", "c", "-p", str(params))
    assert code == 2 and "feature set 'nope' is not declared" in out
    code, out = main(monkeypatch, "extract", "mel", "-c", "c", "-p", str(params))
    assert code == 2 and "logmel: unknown params ['n_mel']" in out
    code, out = main(monkeypatch, "ingest", "c", "-p", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml does not exist" in out
    # --debug: the same mistake with its traceback
    from pipelines.errors import UserError
    with pytest.raises(UserError, match="feature set 'nope'"):
        main(monkeypatch, "--debug", "extract", "nope", "-c", "c", "-p", str(params))

    # a bug (here: a manifest that is not Parquet) is not turned into a one-line "error: ..."
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "c.parquet").write_text("not parquet")
    good = {"paths": {"manifests": str(tmp_path / "m"), "store": str(tmp_path / "s")},
            "features": {"mel": {"extractor": "logmel"}}}
    params.write_text(yaml.safe_dump(good))
    with pytest.raises(Exception) as error:
        main(monkeypatch, "extract", "mel", "-c", "c", "-p", str(params))
    assert not isinstance(error.value, (SystemExit, UserError))


def test_corpus_add_takes_a_fixed_speaker(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("corpora: {}\n")
    code, out = main(monkeypatch, "corpus", "add", "solo", "--root", str(tmp_path), "--regex",
                     r"(?P<emotion>[a-z]+)\.wav$", "--speaker", "narrator", "-p", str(params))
    assert code == 0, out
    assert yaml.safe_load(params.read_text())["corpora"]["solo"]["speaker"] == "narrator"
    code, out = main(monkeypatch, "corpus", "add", "solo2", "--root", str(tmp_path), "--regex", "(?P<emotion>x",
                     "-p", str(params))
    assert code == 2 and "not a valid regular expression" in out
