"""What `aver live --view` shows: a line per window on stderr (`--view -`), or a PNG of the window's latest frame
with the main face's box (white), the speaking face's box (green) and the class probabilities, rewritten each window
(written to a temporary file, then renamed over the last one: a viewer never reads half an image)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

BLANK = (360, 640)          # (h, w) of the picture of a window without video
GREEN, WHITE, BLACK = (0, 200, 0), (255, 255, 255), (0, 0, 0)


def make_view(target: str | None):
    """The view callback `run_live` calls with (window entry, window media): None, a terminal line ("-") or a PNG."""
    if target is None:
        return None
    return terminal_line if target == "-" else PngView(Path(target))


def terminal_line(entry: dict, media) -> None:
    speaker = entry.get("speaking_face")
    print(f"{entry['start']:8.2f}s  {entry['label'] or '-':>10}  {entry.get('confidence') or 0:.2f}"
          + (f"  speaker at x={speaker['box'][0]:.0f}" if speaker else ""), file=sys.stderr)


class PngView:
    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, entry: dict, media) -> None:
        frame = media.frames[-1][1] if media is not None and media.frames else np.zeros((*BLANK, 3), np.uint8)
        image = np.ascontiguousarray(frame[..., ::-1])      # RGB -> BGR for OpenCV
        scale = max(1.0, image.shape[1] / 640)
        thickness = max(1, round(2 * scale))
        if entry.get("face_box"):
            _box(image, entry["face_box"], WHITE, thickness)
        if entry.get("speaking_face"):
            _box(image, entry["speaking_face"]["box"], GREEN, 2 * thickness)
        lines = [f"{entry['start']:.1f}-{entry['end']:.1f} s  {entry.get('label') or 'no features'}"]
        probs = sorted((entry.get("probs") or {}).items(), key=lambda kv: -kv[1])
        lines += [f"{name:>10} {p:.2f}" for name, p in probs]
        for k, text in enumerate(lines):
            origin = (round(8 * scale), round((22 + 20 * k) * scale))
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, BLACK, 3 * thickness, cv2.LINE_AA)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, WHITE, thickness, cv2.LINE_AA)
        ok, png = cv2.imencode(".png", image)
        if ok:
            partial = self.path.with_name(f".{self.path.name}.partial")
            partial.write_bytes(png.tobytes())
            os.replace(partial, self.path)


def _box(image: np.ndarray, box, colour, thickness: int) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
