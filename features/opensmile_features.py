"""openSMILE acoustic features (eGeMAPS / ComParE) on the decoded signal, via the `opensmile` Python package.

`level: functionals` gives one float32 column per openSMILE feature (88 for eGeMAPSv02, 6373 for ComParE_2016),
named exactly as openSMILE names them. `level: lld` gives one list<float32> column per low-level descriptor
(frame series), with `frame_start`/`frame_end` (seconds) and `n_frames`.
"""
from __future__ import annotations

import functools

import numpy as np
import opensmile
import pyarrow as pa

from features.audio_io import load_clip, require_samples
from pipelines.extractor import BaseExtractor

LEVELS = {"functionals": opensmile.FeatureLevel.Functionals, "lld": opensmile.FeatureLevel.LowLevelDescriptors}
FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")
# openSMILE's longest analysis frame (the 60 ms F0 window of eGeMAPS and ComParE): shorter input gives NaN
# functionals ("Segment too short, filling with NaN") and no LLD frame; measured, 60 ms + 1 sample always works
MIN_SECONDS = 0.060
# opensmile hands openSMILE 16-bit PCM: it scales by 32768 and casts to int16, and a sample beyond full scale wraps
# around (+1.15 became -0.85). A noise variant of a loud clip goes beyond it (the mix is not clipped, see
# features/augment_audio.py: white or babble at 5 dB SNR on EmoDB reach 1.05-1.17). Clip to the int16 range first,
# as a 16-bit recording of the mix would be.
PCM16_MAX = 32767 / 32768


def make_smile(feature_set: str, level: str) -> opensmile.Smile:
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=LEVELS[level])


@functools.lru_cache(maxsize=None)
def feature_names(feature_set: str, level: str) -> tuple[str, ...]:
    return tuple(make_smile(feature_set, level).feature_names)


class OpenSmileExtractor(BaseExtractor):
    kind = "opensmile"
    version = "2"     # 2: samples beyond full scale clipped, not wrapped around by the int16 conversion
    modality = "audio"
    defaults = {"feature_set": "eGeMAPSv02", "level": "functionals", "sample_rate": 16000}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["feature_set"] not in FEATURE_SETS:
            raise ValueError(f"opensmile: feature_set must be one of {FEATURE_SETS}, "
                             f"not {self.params['feature_set']!r}")
        if self.params["level"] not in LEVELS:
            raise ValueError(f"opensmile: level must be one of {sorted(LEVELS)}, not {self.params['level']!r}")
        self.smile = None

    @property
    def names(self) -> tuple[str, ...]:
        return feature_names(self.params["feature_set"], self.params["level"])

    def schema(self) -> pa.Schema:
        fields = [("clipped_fraction", pa.float32())]
        if self.params["level"] == "functionals":
            return pa.schema(fields + [(n, pa.float32()) for n in self.names])
        series = pa.list_(pa.float32())
        return pa.schema(fields + [("n_frames", pa.int32()), ("frame_start", series), ("frame_end", series)]
                         + [(n, series) for n in self.names])

    def setup(self) -> None:
        self.smile = make_smile(self.params["feature_set"], self.params["level"])

    def extract(self, item: dict) -> dict:
        if self.smile is None:
            self.setup()
        clip = load_clip(item, self.params["sample_rate"])
        require_samples(clip, int(MIN_SECONDS * clip.sr) + 1, "openSMILE (its 60 ms pitch window)")
        df = self.smile.process_signal(np.clip(clip.signal, -1.0, PCM16_MAX), clip.sr)
        values = df[list(self.names)].to_numpy(dtype=np.float32)
        row = {"clipped_fraction": clip.clipped_fraction}
        if self.params["level"] == "functionals":
            return {**row, **dict(zip(self.names, values[0]))}
        return {**row, "n_frames": len(df),
                "frame_start": df.index.get_level_values("start").total_seconds().to_numpy(np.float32),
                "frame_end": df.index.get_level_values("end").total_seconds().to_numpy(np.float32),
                **{name: np.ascontiguousarray(values[:, i]) for i, name in enumerate(self.names)}}
