"""Face identity: dlib's 128-d face descriptor (ResNet, face_recognition_models' weights) and corpus-level identity
clusters.

The `faces` extractor describes every detected face with `FaceDescriber` (dlib aligns a 150x150 chip from the 68
points with 0.25 padding, as `compute_face_descriptor` does for `face_recognition`), links tracks by identity
(features.tracking) and stores the main track's mean descriptor as the clip's `identity`. Two descriptors closer
than 0.6 (Euclidean) are the same person by dlib's own threshold (99.38% on LFW).

`identity_report` clusters the clips of a corpus by their identity (average linkage, distance threshold) and lists
the clusters that hold several declared speakers and the speakers spread over several clusters: label errors, or
one person under two speaker ids (in train and test at once).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import dlib
import numpy as np

from pipelines.weights import fetch

DESCRIPTOR_DIM = 128
SAME_PERSON = 0.6       # dlib's decision threshold for its descriptors


class FaceDescriber:
    """dlib's face recognition ResNet; load once per worker."""

    def __init__(self):
        self._model = dlib.face_recognition_model_v1(str(fetch("dlib_face_recognition_v1")))

    def __call__(self, rgb: np.ndarray, boxes: np.ndarray, points68: list[np.ndarray]) -> np.ndarray:
        """[n, 128] float32 descriptors of the faces (boxes [x1, y1, x2, y2, ...], their 68 points) of an RGB frame."""
        if not len(boxes):
            return np.zeros((0, DESCRIPTOR_DIM), np.float32)
        shapes = dlib.full_object_detections()
        for box, points in zip(boxes, points68):
            rect = dlib.rectangle(*(int(round(float(v))) for v in box[:4]))
            shapes.append(dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y)))
                                                            for x, y in points]))
        frame = np.ascontiguousarray(rgb, dtype=np.uint8)
        return np.asarray(self._model.compute_face_descriptor(frame, shapes), np.float32).reshape(-1, DESCRIPTOR_DIM)


def cluster(vectors: np.ndarray, threshold: float = SAME_PERSON) -> np.ndarray:
    """Cluster label (0, 1, ...) per vector: average-linkage clusters cut at `threshold` (Euclidean)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    if len(vectors) < 2:
        return np.zeros(len(vectors), int)
    labels = fcluster(linkage(np.asarray(vectors, np.float64), method="average"), t=threshold, criterion="distance")
    # Number clusters by their first clip, so the labels do not depend on scipy's numbering.
    first = {}
    return np.array([first.setdefault(label, len(first)) for label in labels])


def identity_report(clip_ids: list[str], speakers: list[str], vectors: np.ndarray,
                    threshold: float = SAME_PERSON) -> dict:
    """Clusters of the clips' identities compared with their declared speakers.

    Returns {"clusters": n, "mixed_clusters": [{cluster, speakers: {speaker: n clips}, clips: [...]}],
    "split_speakers": [{speaker, clusters: {cluster: n clips}}]}; a cluster's speakers and a speaker's clusters are
    ordered by clip count (most first)."""
    labels = cluster(vectors, threshold)
    by_cluster: dict[int, list[int]] = defaultdict(list)
    by_speaker: dict[str, Counter] = defaultdict(Counter)
    for i, (label, speaker) in enumerate(zip(labels, speakers)):
        by_cluster[int(label)].append(i)
        by_speaker[speaker][int(label)] += 1
    mixed = []
    for label, members in sorted(by_cluster.items()):
        counts = Counter(speakers[i] for i in members)
        if len(counts) > 1:
            mixed.append({"cluster": label, "speakers": dict(counts.most_common()),
                          "clips": sorted(clip_ids[i] for i in members)})
    split = [{"speaker": speaker, "clusters": dict(counts.most_common())}
             for speaker, counts in sorted(by_speaker.items()) if len(counts) > 1]
    return {"clusters": len(by_cluster), "mixed_clusters": mixed, "split_speakers": split}


def corpus_identities(store, feature_set: str, corpus: str, threshold: float = SAME_PERSON) -> dict:
    """`identity_report` over the clean rows of a corpus's `feature_set` (a faces feature set with `identity`), with
    the manifest's declared speakers; clips without an identity row or without a speaker are counted, not used."""
    from pipelines.manifest import read_manifest
    table = store.read(feature_set, corpus, columns=["clip_id", "variant", "identity"]) \
        if "identity" in store.info(feature_set, corpus)["columns"] else None
    if table is None:
        raise ValueError(f"feature set {feature_set!r} of corpus {corpus!r} has no `identity` column "
                         f"(a `faces` feature set with identity: true, extracted)")
    rows = [row for row in table.to_pylist() if row["variant"] == "clean"]
    declared = read_manifest(store.manifest_dir, corpus).select(["clip_id", "speaker"]).to_pydict()
    speakers = dict(zip(declared["clip_id"], declared["speaker"]))
    used = [r for r in rows if r["identity"] is not None and speakers.get(r["clip_id"])]
    if not used:
        raise ValueError(f"no clip of corpus {corpus!r} has both an identity in {feature_set!r} and a speaker")
    report = identity_report([r["clip_id"] for r in used], [speakers[r["clip_id"]] for r in used],
                             np.array([r["identity"] for r in used], np.float32), threshold)
    return {"corpus": corpus, "feature_set": feature_set, "threshold": threshold, "clips": len(used),
            "clips_without_identity_or_speaker": len(speakers) - len(used), **report}
