"""Model registry: offline override, sha256 check, package-shipped files, clear error when missing."""
import pytest

from conftest import shared_path
from pipelines import weights
from pipelines.weights import MODELS, WeightsUnavailable, fetch, sha256_of


def test_override_dir_is_used_and_checked(monkeypatch):
    models = shared_path("models")
    monkeypatch.setenv("AVER_MODELS_DIR", str(models))
    path = fetch("retinaface_mnet025_biubug6")
    assert path == models / "retinaface_mnet025_biubug6" / "mobilenet0.25_Final.pth"
    assert sha256_of(path) == MODELS["retinaface_mnet025_biubug6"].sha256


def test_wrong_bytes_are_rejected(monkeypatch, tmp_path):
    bad = tmp_path / "efficientat_mn04_as" / MODELS["efficientat_mn04_as"].file
    bad.parent.mkdir()
    bad.write_bytes(b"not the weights")
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="does not match the sha256"):
        fetch("efficientat_mn04_as")


def test_missing_offline_names_file_and_place(monkeypatch, tmp_path):
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AVER_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable) as err:
        fetch("pfld68_cunjian")
    msg = str(err.value)
    assert "pfld.onnx" in msg and str(tmp_path / "cache") in msg and MODELS["pfld68_cunjian"].url in msg


def test_package_shipped_dlib_model_is_found(monkeypatch, tmp_path):
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    path = fetch("dlib_shape_predictor_68")
    assert path.name == "shape_predictor_68_face_landmarks.dat" and "face_recognition_models" in str(path)


def test_download_goes_to_cache_and_is_verified(monkeypatch, tmp_path):
    """The download path, served from a local file:// URL instead of the official one."""
    src = shared_path("models", "fer_mini_xception_fer2013", "emotion_model.hdf5")
    spec = MODELS["fer_mini_xception_fer2013"]
    monkeypatch.setitem(MODELS, spec.name, weights.ModelSpec(spec.name, spec.file, src.as_uri(), spec.sha256,
                                                              spec.licence))
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AVER_OFFLINE", raising=False)
    path = fetch(spec.name)
    assert path == tmp_path / "cache" / "models" / spec.name / spec.file
    assert sha256_of(path) == spec.sha256


def test_weights_without_a_registered_sha256_need_the_users_explicit_consent(monkeypatch, tmp_path):
    """ternaus' ResNet-50 RetinaFace has no published sha256: its file is refused unless named in the override."""
    spec = MODELS["retinaface_resnet50_ternaus"]
    assert spec.sha256 is None
    placed = tmp_path / spec.name / spec.file
    placed.parent.mkdir()
    placed.write_bytes(b"someone's weights")
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv(weights.UNVERIFIED_ENV, "efficientat_mn04_as")         # consent for another file only
    with pytest.raises(WeightsUnavailable, match="no published sha256") as err:
        fetch(spec.name)
    assert f"{weights.UNVERIFIED_ENV}={spec.name}" in str(err.value) and sha256_of(placed) in str(err.value)
    monkeypatch.setenv(weights.UNVERIFIED_ENV, f"efficientat_mn04_as, {spec.name}")
    assert fetch(spec.name) == placed


def test_an_unverifiable_download_is_refused_and_not_cached(monkeypatch, tmp_path):
    src = shared_path("models", "pfld68_cunjian", "pfld.onnx")
    spec = weights.ModelSpec("unhashed", "pfld.onnx", src.as_uri(), None, "test")
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AVER_OFFLINE", raising=False)
    monkeypatch.delenv(weights.UNVERIFIED_ENV, raising=False)
    with pytest.raises(WeightsUnavailable, match="no published sha256"):
        fetch(spec.name)
    assert not any((tmp_path / "cache").rglob("*.*"))


def test_biubug6_resnet50_is_registered_with_its_published_hash_and_size():
    # openvinotoolkit/open_model_zoo models/public/retinaface-resnet50-pytorch/model.yml (google_drive id below)
    spec = MODELS["retinaface_resnet50_biubug6"]
    assert spec.file == "Resnet50_Final.pth" and spec.by_hand
    assert spec.sha256 == "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d"
    assert spec.size == 109_497_761 and "14KX6VqF69MdSPk3Tr9PlDYbq7ArpdNUW" in spec.url


def test_a_google_drive_file_is_never_downloaded_and_the_error_says_where_to_get_and_put_it(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("fetch tried to download a by-hand file")
    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("AVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AVER_OFFLINE", raising=False)
    spec = MODELS["retinaface_resnet50_biubug6"]
    with pytest.raises(WeightsUnavailable, match="download it by hand from https://drive.google.com/") as err:
        fetch(spec.name)
    msg = str(err.value)
    assert str(tmp_path / "cache" / "models" / spec.name / spec.file) in msg
    assert f"$AVER_MODELS_DIR/{spec.name}/{spec.file}" in msg and spec.sha256 in msg


def test_a_file_of_the_wrong_size_is_rejected(monkeypatch, tmp_path):
    spec = MODELS["retinaface_resnet50_biubug6"]
    placed = tmp_path / spec.name / spec.file
    placed.parent.mkdir()
    placed.write_bytes(b"<html>Google Drive can't scan this file for viruses</html>")
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match=f"does not match .*{spec.size} bytes"):
        fetch(spec.name)


def test_unverified_weights_need_the_users_sha256(monkeypatch, tmp_path):
    """No published sha256 (HSEmotion): refused without one from the user, then checked against it."""
    spec = MODELS["hsemotion_enet_b0_8_best_vgaf"]
    assert spec.sha256 is None and spec.url.endswith("enet_b0_8_best_vgaf.onnx")
    model = tmp_path / spec.name / spec.file
    model.parent.mkdir()
    model.write_bytes(b"some onnx bytes")
    monkeypatch.setenv("AVER_MODELS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="no published sha256"):
        fetch(spec.name)
    with pytest.raises(WeightsUnavailable, match="does not match"):
        fetch(spec.name, sha256="0" * 64)
    assert fetch(spec.name, sha256=sha256_of(model).upper()) == model


def test_user_sha256_cannot_override_a_registered_one(monkeypatch):
    monkeypatch.setenv("AVER_MODELS_DIR", str(shared_path("models")))
    with pytest.raises(WeightsUnavailable, match="differs from the registered"):
        fetch("retinaface_mnet025_biubug6", sha256="0" * 64)


def test_dlib_face_recognition_model_ships_in_its_package():
    path = fetch("dlib_face_recognition_v1")
    assert sha256_of(path) == MODELS["dlib_face_recognition_v1"].sha256
