"""Speaker-independent splits: no speaker on two sides of any fold, over many random speaker layouts."""
import numpy as np
import pandas as pd
import pytest

from training.splits import (SpeakerOverlapError, assert_disjoint, assert_speaker_disjoint, cross_corpus,
                             leave_one_speaker_out, make_fold, make_folds, official_split, resolve_labels,
                             select_labels, speaker_kfold, with_inner_validation)


def random_clips(rng: np.random.Generator) -> pd.DataFrame:
    """A corpus with a random number of speakers, clips per speaker and class mix (shuffled row order)."""
    n_speakers = int(rng.integers(4, 12))
    rows = []
    for s in range(n_speakers):
        for _ in range(int(rng.integers(3, 15))):
            rows.append({"speaker": f"c{s % 2}/spk{s}", "corpus": f"c{s % 2}",
                         "emotion": rng.choice(["happy", "angry", "sad", "neutral"])})
    df = pd.DataFrame(rows).sample(frac=1, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    df["y"] = df["emotion"].map({"happy": 0, "angry": 1, "sad": 2, "neutral": 3})
    return df


def check_partition(folds, speakers, n_rows, covers_all_tests=True):
    tested = np.concatenate([f.test for f in folds])
    for f in folds:
        parts = [f.train, f.test] + ([f.valid] if f.valid is not None else [])
        sets = [set(speakers[p]) for p in parts]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                assert not sets[i] & sets[j], f"{f.name}: speaker leak"
        assert len(np.unique(np.concatenate(parts))) == sum(map(len, parts)), "a row in two parts"
    if covers_all_tests:
        assert sorted(tested) == list(range(n_rows)), "every row is tested exactly once"


@pytest.mark.parametrize("seed", range(25))
def test_random_layouts_never_leak_speakers(seed):
    rng = np.random.default_rng(seed)
    clips = random_clips(rng)
    speakers = clips["speaker"].to_numpy()
    y = clips["y"].to_numpy()
    n_splits = int(rng.integers(2, 5))
    inner = float(rng.choice([0.0, 0.25, 0.5]))
    for cfg in ({"kind": "loso", "inner_valid": inner}, {"kind": "kfold", "n_splits": n_splits, "seed": seed}):
        folds = make_folds(clips, cfg, y)
        check_partition(folds, speakers, len(clips))
        if cfg["kind"] == "loso":
            assert len(folds) == len(set(speakers))
            assert all(len(f.test_speakers) == 1 for f in folds)
            assert all((f.valid is not None) == (inner > 0) for f in folds)
        else:
            assert len(folds) == n_splits


def test_overlap_is_refused():
    speakers = np.array(["a", "a", "b", "c"])
    leaky = make_fold("leaky", speakers, [0, 2], [1, 3])
    with pytest.raises(SpeakerOverlapError, match="leaky.*'a'"):
        assert_speaker_disjoint([leaky])
    leaky_valid = make_fold("v", speakers, [2], [3], valid=[0, 1, 3])
    with pytest.raises(SpeakerOverlapError, match="valid and test"):
        assert_speaker_disjoint([leaky_valid])


def test_official_split_checks_speakers_and_needs_parts():
    speakers = np.array(["a", "a", "b", "c", "d"])
    fold, = official_split(np.array(["train", "Train", "dev", "test", None]), speakers)
    assert list(fold.train) == [0, 1] and list(fold.valid) == [2] and list(fold.test) == [3]
    clips = pd.DataFrame({"speaker": ["a", "b", "a"], "corpus": "x", "split": ["train", "train", "test"]})
    with pytest.raises(SpeakerOverlapError):
        make_folds(clips, {"kind": "official"}, np.zeros(3, int))
    with pytest.raises(ValueError, match="official split needs rows"):
        official_split(np.array(["train", "train"]), np.array(["a", "b"]))


def test_cross_corpus():
    corpora = np.array(["emodb", "crema", "emodb", "ravdess"])
    speakers = np.char.add(corpora, np.array(["/1", "/1", "/2", "/1"]))
    fold, = cross_corpus(corpora, ["emodb"], ["crema", "ravdess"], speakers)
    assert list(fold.train) == [0, 2] and list(fold.test) == [1, 3]
    with pytest.raises(ValueError, match="no rows"):
        cross_corpus(corpora, ["emodb"], ["meld"], speakers)


def test_kfold_needs_enough_speakers():
    with pytest.raises(ValueError, match="at least n_splits=5"):
        speaker_kfold(np.zeros(6, int), np.array(list("aabbcc")), 5)


def test_inner_validation_takes_whole_training_speakers():
    speakers = np.repeat([f"s{i}" for i in range(8)], 5)
    y = np.tile(np.arange(5), 8)
    fold = leave_one_speaker_out(speakers)[0]
    inner = with_inner_validation(fold, y, speakers, 0.25)
    assert set(speakers[inner.valid]).isdisjoint(speakers[inner.train])
    assert inner.test_speakers == {"s0"} and len(inner.valid_speakers) == 2
    with pytest.raises(ValueError, match="needs 4 training speakers"):
        with_inner_validation(leave_one_speaker_out(speakers[:15])[0], y[:15], speakers[:15], 0.25)


def test_pretraining_guard():
    speakers = np.array(["a", "b", "c", "d"])
    folds = leave_one_speaker_out(speakers)
    assert_disjoint(["x", "y"], folds)
    with pytest.raises(SpeakerOverlapError, match="pre-training speakers.*'c'"):
        assert_disjoint(["x", "c"], folds)


def test_label_sets():
    present = ["angry", "boredom", None, "sad", "angry"]
    assert resolve_labels("all", present) == ["angry", "boredom", "sad"]
    assert resolve_labels("four_class", present) == ["happy", "angry", "sad", "neutral"]
    assert resolve_labels("mine", present, {"mine": ["sad"]}) == ["sad"]
    assert resolve_labels(["sad", "angry"], present) == ["sad", "angry"]
    with pytest.raises(KeyError, match="unknown label set"):
        resolve_labels("nope", present)
    df = pd.DataFrame({"emotion": present, "i": range(5)})
    assert select_labels(df, ["angry", "sad"])["i"].tolist() == [0, 3, 4]
