"""Canonical emotion vocabulary shared by every corpus adapter and model."""

EMOTIONS: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful",
    "disgust", "surprised", "contempt", "boredom", "other",
)
DIMENSIONS: tuple[str, ...] = ("valence", "arousal", "dominance")

# Spellings seen across corpora, mapped once so adapters only declare their own codes.
_SYNONYMS = {
    "neu": "neutral", "neutral": "neutral", "calm": "calm",
    "hap": "happy", "happy": "happy", "happiness": "happy", "joy": "happy", "exc": "happy",
    "sad": "sad", "sadness": "sad",
    "ang": "angry", "anger": "angry", "angry": "angry",
    "fea": "fearful", "fear": "fearful", "fearful": "fearful",
    "dis": "disgust", "disgust": "disgust", "disgusted": "disgust",
    "sur": "surprised", "surprise": "surprised", "surprised": "surprised",
    "con": "contempt", "contempt": "contempt",
    "bor": "boredom", "boredom": "boredom",
    "oth": "other", "other": "other", "fru": "other", "xxx": "other",
}


def canonical(label: str | None) -> str | None:
    """Map a free-form emotion name onto the vocabulary; None when it cannot be mapped."""
    if label is None:
        return None
    return _SYNONYMS.get(str(label).strip().lower())
