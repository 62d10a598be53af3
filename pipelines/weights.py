"""Model registry: every pretrained weight file aver uses, fetched once into a cache and checked by sha256.

Lookup order for `fetch(name)`:
  1. `$AVER_MODELS_DIR/<name>/<file>` (offline override: a directory laid out like the registry names),
  2. the cache `$AVER_CACHE/models/<name>/<file>` (default `~/.cache/aver/models`),
  3. download from the official URL into the cache (skipped when `AVER_OFFLINE=1`).
A file found anywhere must match its size and sha256; a missing file raises `WeightsUnavailable` saying
which file is needed and where to put it. Files published only on Google Drive (biubug6's ResNet-50 RetinaFace)
are never downloaded: Drive answers a plain HTTP request for a file this big with an HTML confirmation page, so
the error asks the user to save the file by hand. Where upstream publishes no sha256 (HSEmotion's ONNX files;
ternaus' ResNet-50 RetinaFace, whose name holds only a 9-digit prefix), `fetch` refuses the file until the user
either passes the sha256 of the file they checked (an extractor's `weights_sha256` param; every copy is then
checked against it) or accepts it by name: `AVER_UNVERIFIED_WEIGHTS=retinaface_resnet50_ternaus` (comma-separated).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    url: str | None
    sha256: str | None          # None where upstream publishes no hash: refused unless named in UNVERIFIED_ENV
    licence: str
    package: str | None = None  # "package:subdir" of a pip package that ships the file
    size: int | None = None     # bytes, where published: a wrong file is refused before hashing it
    by_hand: bool = False       # url is a page urllib cannot download from (Google Drive): the user saves the file


# HSEmotion (Savchenko) AffectNet models, as downloaded by the official hsemotion-onnx package (get_model_path).
# No sha256 is published for them.
HSEMOTION_URL = "https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/models/affectnet_emotions/onnx/"
HSEMOTION_VARIANTS = ("enet_b0_8_best_vgaf", "enet_b0_8_best_afew", "enet_b0_8_va_mtl", "enet_b2_8", "enet_b2_7")


MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    ModelSpec("retinaface_mnet025_biubug6", "mobilenet0.25_Final.pth",
              "https://github.com/biubug6/Face-Detector-1MB-with-landmark/raw/master/weights/mobilenet0.25_Final.pth",
              "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1", "MIT (WIDER FACE)", size=1_789_735),
    # biubug6/Pytorch_Retinaface's trained ResNet-50 (README: Google Drive folder 1oZRSG0ZegbVkVwUd8wUIQx8W7yfZ_ki1);
    # file id, size and sha256 as published by openvinotoolkit/open_model_zoo retinaface-resnet50-pytorch/model.yml.
    ModelSpec("retinaface_resnet50_biubug6", "Resnet50_Final.pth",
              "https://drive.google.com/file/d/14KX6VqF69MdSPk3Tr9PlDYbq7ArpdNUW/view",
              "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", "MIT (WIDER FACE)",
              size=109_497_761, by_hand=True),
    ModelSpec("retinaface_resnet50_ternaus", "retinaface_resnet50_2020-07-20-f168fae3c.zip",
              "https://github.com/ternaus/retinaface/releases/download/0.01/retinaface_resnet50_2020-07-20-f168fae3c.zip",
              None, "MIT (WIDER FACE)"),
    ModelSpec("fer_mini_xception_fer2013", "emotion_model.hdf5",
              "https://github.com/oarriaga/face_classification/raw/master/trained_models/emotion_models/"
              "fer2013_mini_XCEPTION.102-0.66.hdf5",
              "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "MIT (FER2013: research only)",
              size=872_856),
    ModelSpec("efficientat_mn04_as", "mn04_as_mAP_432.pt",
              "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/mn04_as_mAP_432.pt",
              "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c", "MIT (AudioSet)", size=4_066_513),
    ModelSpec("pfld68_cunjian", "pfld.onnx",
              "https://github.com/cunjian/pytorch_face_landmark/raw/master/onnx/pfld.onnx",
              "7d7bbd5c6a1d9272e58d9773898284a1905d872eba9a662df9b5f20f1ba6f83e", "none stated (300-W: research only)",
              size=2_987_921),
    ModelSpec("dlib_shape_predictor_68", "shape_predictor_68_face_landmarks.dat", None,
              "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f", "CC0 package (iBUG 300-W: research only)",
              package="face_recognition_models:models", size=99_693_937),
    ModelSpec("dlib_face_recognition_v1", "dlib_face_recognition_resnet_model_v1.dat", None,
              "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
              "CC0 package (dlib's model, public domain; trained on FaceScrub, VGG Face and web images)",
              package="face_recognition_models:models"),
    *(ModelSpec(f"hsemotion_{variant}", f"{variant}.onnx", HSEMOTION_URL + f"{variant}.onnx", None,
                "Apache-2.0 (HSEmotion; AffectNet: research only)") for variant in HSEMOTION_VARIANTS),
]}


UNVERIFIED_ENV = "AVER_UNVERIFIED_WEIGHTS"


class WeightsUnavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("AVER_CACHE", Path.home() / ".cache" / "aver")) / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked(spec: ModelSpec, path: Path, expected: str | None) -> Path:
    if expected is None:
        if spec.name in os.environ.get(UNVERIFIED_ENV, "").replace(" ", "").split(","):
            return path
        raise WeightsUnavailable(f"{path} cannot be verified: {spec.name} has no published sha256 (sha256 of "
                                 f"this file: {sha256_of(path)}). Check the file yourself, then pass its sha256 (the "
                                 f"extractor param `weights_sha256`) or accept it by name: {UNVERIFIED_ENV}={spec.name}")
    size = path.stat().st_size
    if (spec.size is not None and size != spec.size) or sha256_of(path) != expected:
        raise WeightsUnavailable(f"{path} ({size} bytes) does not match the sha256 registered for {spec.name} "
                                 f"({expected}" + (f", {spec.size} bytes" if spec.size else "")
                                 + "); delete it or replace it with the official file")
    return path


def _from_package(spec: ModelSpec) -> Path | None:
    # Locate the file without importing the package: face_recognition_models imports pkg_resources,
    # which recent setuptools no longer ships.
    package, subdir = spec.package.split(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / subdir / spec.file
    return path if path.exists() else None


def _download(spec: ModelSpec, dest: Path, expected: str | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp, \
            urllib.request.urlopen(spec.url, timeout=60) as resp:
        shutil.copyfileobj(resp, tmp)
    try:
        _checked(spec, Path(tmp.name), expected)
    except WeightsUnavailable:
        Path(tmp.name).unlink()
        raise
    Path(tmp.name).replace(dest)


def expected_sha256(spec: ModelSpec, user_sha256: str | None) -> str | None:
    """The sha256 a file must have: the registry's, else the one the user verified (None: refused unless accepted by name)."""
    if spec.sha256 and user_sha256 and user_sha256.lower() != spec.sha256:
        raise WeightsUnavailable(f"sha256 {user_sha256} given for {spec.name} differs from the registered "
                                 f"{spec.sha256}")
    return spec.sha256 or (user_sha256.lower() if user_sha256 else None)


def fetch(name: str, sha256: str | None = None) -> Path:
    """Local path of a registered weight file, downloading it into the cache if allowed. `sha256`: the hash the
    user verified, for specs without a published one."""
    spec = MODELS[name]
    expected = expected_sha256(spec, sha256)
    override = os.environ.get("AVER_MODELS_DIR")
    if override and (Path(override) / name / spec.file).exists():
        return _checked(spec, Path(override) / name / spec.file, expected)
    if spec.package and (path := _from_package(spec)):
        return _checked(spec, path, expected)
    cached = cache_dir() / name / spec.file
    if cached.exists():
        return _checked(spec, cached, expected)
    if spec.by_hand:
        reason = f"it is published on a page aver cannot download from; download it by hand from {spec.url}"
    elif spec.url and os.environ.get("AVER_OFFLINE") != "1":
        try:
            _download(spec, cached, expected)
            return cached
        except OSError as e:
            reason = f"download from {spec.url} failed ({e})"
    else:
        reason = "offline (AVER_OFFLINE=1)" if spec.url else f"pip package {spec.package.split(':')[0]} missing"
    raise WeightsUnavailable(
        f"weights {spec.name!r} ({spec.file}) not available: {reason}. Put the file at "
        f"{cached} or at $AVER_MODELS_DIR/{spec.name}/{spec.file}"
        + (f" (source: {spec.url})" if spec.url and not spec.by_hand else "")
        + (f"; it must match sha256 {spec.sha256}" if spec.by_hand else "")
        + ("" if spec.sha256 else f"; it has no published sha256, so also set {UNVERIFIED_ENV}={spec.name}"))
