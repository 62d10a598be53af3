"""A drawn talking head: static skin, hair and scene drawn once per speaker; eyes, brows and mouth per frame."""
from __future__ import annotations

import cv2
import numpy as np

from features.warp import warp_affine
from pipelines.demo.profiles import Expression, Speaker


SHIFT = 4                      # OpenCV sub-pixel bits for anti-aliased drawing


def _pts(xy) -> np.ndarray:
    return np.round(np.asarray(xy) * (1 << SHIFT)).astype(np.int32)


def _fill(img, xy, color) -> None:
    cv2.fillPoly(img, [_pts(xy)], color, cv2.LINE_AA, SHIFT)


def _stroke(img, xy, color, thickness: int) -> None:
    cv2.polylines(img, [_pts(xy)], False, color, max(thickness, 1), cv2.LINE_AA, SHIFT)


def _ellipse(cx, cy, ax, ay, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(a), cy + ay * np.sin(a)], 1)


def _mask(size: int, xy) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    _fill(m, xy, 255)
    return m.astype(np.float32) / 255


def _texture(rng, size: int, blur, amount: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), *blur)
    return 1 + amount * noise / noise.std()


def _rgba(color) -> tuple:
    return (*color, 255)


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(float(x), lo), hi)


class Face:
    """One speaker's head: skin, hair, neck, nose and background drawn once; eyes, brows and mouth per frame."""

    def __init__(self, speaker: Speaker, size: int, rng: np.random.Generator):
        self.sp, self.size = speaker, size
        s = size
        self.w = speaker.face_w * s
        self.h = self.w * speaker.aspect
        self.cx, self.cy = s / 2, 0.46 * s
        self.eye_y = self.cy - 0.08 * self.h
        self.eye_dx, self.ew = speaker.eye_spacing * self.w, speaker.eye_size * self.w
        self.nose_y, self.mouth_y = self.cy + 0.3 * self.h, self.cy + 0.55 * self.h
        self.mw = 0.36 * self.w
        self.line = max(1, round(s / 200))
        self.head = self._draw_head(rng)
        self.backdrop, self.clothes, self.clothes_alpha = self._draw_scene(rng)

    def outline(self) -> np.ndarray:
        a = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        narrow = 1 - self.sp.taper * np.clip(np.sin(a), 0, None) ** 2
        return np.stack([self.cx + self.w * np.cos(a) * narrow, self.cy + self.h * np.sin(a)], 1)

    def _draw_head(self, rng) -> np.ndarray:
        """The static head as BGRA uint8: hair, neck, ears, shaded skin, hairline, nose."""
        s, sp, w, h, cx, cy = self.size, self.sp, self.w, self.h, self.cx, self.cy
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        u, v = (xx - cx) / w, (yy - cy) / h
        light = (1.08 - 0.2 * (u ** 2 + v ** 2) - 0.08 * u)[..., None]      # key light from the viewer's left
        shade = np.ones((s, s), np.float32)                                  # soft darkening marks on the skin
        cv2.line(shade, (int(cx + 0.06 * w), int(self.eye_y + 0.1 * h)), (int(cx + 0.12 * w), int(self.nose_y)),
                 0.8, max(2, int(0.05 * w)))                                  # nose side in shadow
        cv2.ellipse(shade, (int(cx), int(self.nose_y + 0.05 * h)), (int(0.18 * w), int(0.04 * h)),
                    0, 0, 360, 0.85, -1)                                       # under the nose
        for side in (-1, 1):   # eye sockets
            cv2.ellipse(shade, (int(cx + side * self.eye_dx), int(self.eye_y - 0.2 * self.ew)),
                        (int(1.3 * self.ew), int(0.8 * self.ew)), 0, 0, 360, 0.9, -1)
        shade = cv2.GaussianBlur(shade, (0, 0), 0.04 * w)[..., None]
        skin = np.asarray(sp.skin, np.float32) * light * shade * _texture(rng, s, (0.8,), 0.025)[..., None]
        hair = (np.asarray(sp.hair, np.float32) * (1.15 - 0.25 * (v + 1)[..., None].clip(0, 2) / 2)
                * _texture(rng, s, (1.0, 6.0), 0.1)[..., None])                # streaks along the hair
        hair += 18 * np.clip(1 - ((u + 0.3) ** 2 + (v + 0.9) ** 2) * 4, 0, 1)[..., None]   # sheen

        color = np.zeros((s, s, 3), np.float32)
        alpha = np.zeros((s, s), np.float32)

        def paint(xy, src):
            m = _mask(s, xy)[..., None]
            color[:] = color * (1 - m) + src * m
            alpha[:] = np.maximum(alpha, m[..., 0])

        if sp.long_hair:
            paint(np.concatenate([_ellipse(cx, cy - 0.05 * h, 1.22 * w, 1.05 * h)[24:],
                                  [[cx + 1.3 * w, s + 5], [cx - 1.3 * w, s + 5]]]), hair)
        paint([[cx - 0.42 * w, cy + 0.5 * h], [cx + 0.42 * w, cy + 0.5 * h],
               [cx + 0.5 * w, s + 5], [cx - 0.5 * w, s + 5]], skin * 0.78)                 # neck
        for side in (-1, 1):
            paint(_ellipse(cx + side * 0.97 * w, self.eye_y + 0.2 * h, 0.15 * w, 0.26 * h), skin * 0.9)
        paint(_ellipse(cx, cy - 0.18 * h, 1.07 * w, 0.9 * h), hair)                       # hair volume
        face = self.outline()
        paint(face, skin)
        # hair over the forehead, down to a curved hairline with a side parting
        xs = np.linspace(cx - 1.1 * w, cx + 1.1 * w, 40)
        part = rng.choice([-0.4, 0.4])
        edge = cy - sp.hairline * h + 0.35 * h * ((xs - cx) / w) ** 2 + 0.12 * h * np.tanh(3 * ((xs - cx) / w - part))
        hairline_poly = np.concatenate([np.stack([xs, edge], 1), [[cx + 1.1 * w, cy - 1.2 * h],
                                                                  [cx - 1.1 * w, cy - 1.2 * h]]])
        m = _mask(s, hairline_poly) * _mask(s, _ellipse(cx, cy - 0.02 * h, 1.03 * w, 1.02 * h))
        color[:] = color * (1 - m[..., None]) + hair * m[..., None]

        head = np.dstack([np.clip(color, 0, 255), alpha * 255]).astype(np.uint8)
        nostril = tuple(c * 0.45 for c in sp.skin)
        for side in (-1, 1):
            _fill(head, _ellipse(cx + side * 0.09 * w, self.nose_y + 0.01 * h, 0.045 * w, 0.022 * h), _rgba(nostril))
        _stroke(head, [[cx - 0.16 * w, self.nose_y - 0.02 * h], [cx - 0.1 * w, self.nose_y + 0.03 * h]],
                _rgba(tuple(c * 0.7 for c in sp.skin)), self.line)
        return head

    def _draw_scene(self, rng):
        """Backdrop (vertical gradient, a soft window light) and the clothes that hide the neck's base."""
        s, w, h, cx = self.size, self.w, self.h, self.cx
        top, bottom = (np.asarray(c, np.float32) for c in self.sp.backdrop)
        ramp = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
        backdrop = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (s, s, 3)).copy()
        window = np.zeros((s, s), np.float32)
        x0, y0 = rng.uniform(0, 0.6) * s, rng.uniform(0, 0.3) * s
        cv2.rectangle(window, (int(x0), int(y0)), (int(x0 + 0.35 * s), int(y0 + 0.4 * s)), 1.0, -1)
        backdrop += 35 * cv2.GaussianBlur(window, (0, 0), 0.05 * s)[..., None]
        shoulder_y = self.cy + 1.25 * h
        body = np.concatenate([
            [[cx - 2.2 * w, s + 5], [cx - 2.0 * w, shoulder_y + 0.3 * h], [cx - 1.2 * w, shoulder_y]],
            np.stack([cx + np.linspace(-0.55, 0.55, 15) * w,                  # round neckline
                      shoulder_y - 0.05 * h + 0.25 * h * np.cos(np.linspace(-1.3, 1.3, 15))], 1),
            [[cx + 1.2 * w, shoulder_y], [cx + 2.0 * w, shoulder_y + 0.3 * h], [cx + 2.2 * w, s + 5]]])
        alpha = _mask(s, body)
        folds = _texture(rng, s, (6.0,), 0.06)[..., None]
        clothes = np.asarray(self.sp.clothes, np.float32) * folds * (1.05 - 0.3 * np.abs(
            (np.arange(s, dtype=np.float32) - cx) / (2.2 * w)))[None, :, None]
        return np.clip(backdrop, 0, 255).astype(np.uint8), np.clip(clothes, 0, 255).astype(np.uint8), alpha

    def _eye(self, img, side: int, e: Expression, blink: float, gaze) -> None:
        sp, ew, line = self.sp, self.ew, self.line
        ex, ey = self.cx + side * self.eye_dx, self.eye_y
        up = 0.5 * ew * _clip(e.eye_open, 0.4, 1.8) * blink
        low = 0.32 * ew * (1 - 0.55 * _clip(e.lower_lid, 0, 1)) * max(blink, 0.3)
        xs = np.linspace(-1, 1, 17)
        tilt = -0.08 * ew * xs * side                  # outer corner slightly higher
        upper = np.stack([ex + ew * xs, ey + tilt - up * (1 - xs ** 2) * (1 - 0.15 * xs * side)], 1)
        lower = np.stack([ex + ew * xs, ey + tilt + low * (1 - xs ** 2)], 1)
        if up + low > 1.0:
            x0, y0 = int(ex - ew) - 2, int(ey - up - 0.2 * ew) - 2
            x1, y1 = int(ex + ew) + 3, int(ey + low + 0.2 * ew) + 3
            almond = np.concatenate([upper, lower[::-1]]) - (x0, y0)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _fill(mask, almond, 255)
            patch = np.empty((y1 - y0, x1 - x0, 4), np.uint8)
            patch[:] = (228, 232, 236, 255)
            ix, iy = ex + gaze[0] * ew - x0, ey + gaze[1] * ew - y0
            _fill(patch, _ellipse(ix, iy, 0.46 * ew, 0.46 * ew), _rgba(sp.iris))
            _fill(patch, _ellipse(ix, iy, 0.2 * ew, 0.2 * ew), (15, 15, 15, 255))
            _fill(patch, _ellipse(ix - 0.15 * ew, iy - 0.15 * ew, 0.08 * ew, 0.08 * ew), (250, 250, 250, 255))
            roi = img[y0:y1, x0:x1]
            m = mask[..., None].astype(np.float32) / 255
            roi[:] = (roi * (1 - m) + patch * m).astype(np.uint8)
        _stroke(img, upper, (25, 22, 22, 255), 2 * line)
        _stroke(img, lower, _rgba(tuple(c * 0.7 for c in sp.skin)), line)
        crease = upper + (0, -0.3 * ew)
        _stroke(img, crease[3:-3], _rgba(tuple(c * 0.78 for c in sp.skin)), line)

    def _brow(self, img, side: int, e: Expression) -> None:
        ew = self.ew
        base = self.eye_y - 1.25 * ew - 0.5 * ew * e.brow_raise
        inner = np.array([self.cx + side * (self.eye_dx - 0.9 * ew + 0.3 * ew * max(e.brow_knit, 0)),
                          base + 0.1 * ew - 0.5 * ew * e.brow_inner + 0.2 * ew * max(e.brow_knit, 0)])
        outer = np.array([self.cx + side * (self.eye_dx + 1.15 * ew), base + 0.25 * ew + 0.1 * ew * e.brow_raise])
        peak = inner + 0.6 * (outer - inner) + (0, -0.3 * ew - 0.15 * ew * max(e.brow_raise, 0))
        k = np.linspace(0, 1, 16)[:, None]
        curve = (1 - k) ** 2 * inner + 2 * k * (1 - k) * peak + k ** 2 * outer       # quadratic Bezier
        normal = np.gradient(curve, axis=0)[:, ::-1] * (1, -1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        half = (self.sp.brow_width * ew * (1 - 0.65 * k)) / 2                       # tapers outward
        _fill(img, np.concatenate([curve + normal * half, (curve - normal * half)[::-1]]),
              _rgba(tuple(c * 0.75 for c in self.sp.hair)))

    def _mouth(self, img, e: Expression, opening: float, width: float) -> None:
        sp = self.sp
        mw = self.mw * _clip(e.mouth_width, 0.6, 1.4) * (1 + 0.6 * (width - 1) * opening)
        gap = 0.6 * self.mw * _clip(e.jaw + (1 - e.jaw) * opening, 0, 1)
        s = np.linspace(-1, 1, 25)
        body = (1 - s ** 2) ** 0.7
        mid = self.mouth_y - 0.35 * self.mw * e.smile * s ** 2              # corners up for a smile
        in_up, in_low = mid - 0.3 * gap * body, mid + 0.7 * gap * body      # the jaw drops the lower lip
        out_up = in_up - 0.16 * self.mw * np.sqrt(1 - s ** 2) * (1 - 0.3 * np.exp(-(s / 0.15) ** 2))
        out_low = in_low + 0.22 * self.mw * np.sqrt(1 - s ** 2)
        x = self.cx + mw * s
        if e.smile > 0.2:        # nasolabial folds deepen with a smile
            fold = _rgba(tuple(c * (1 - 0.25 * min(e.smile, 1)) for c in sp.skin))
            for side in (-1, 1):
                _stroke(img, [[self.cx + side * 0.22 * self.w, self.nose_y - 0.02 * self.h],
                              [self.cx + side * (mw + 0.08 * self.w), mid[-1] + 0.04 * self.h]], fold, self.line)
        _fill(img, np.concatenate([np.stack([x, out_up], 1), np.stack([x, out_low], 1)[::-1]]), _rgba(sp.lips))
        if gap > 0.8:
            _fill(img, np.concatenate([np.stack([x, in_up], 1), np.stack([x, in_low], 1)[::-1]]), (35, 25, 70, 255))
            teeth = np.minimum(0.4 * (in_low - in_up), 0.14 * self.mw)[4:-4]
            tx = x[4:-4]
            _fill(img, np.concatenate([np.stack([tx, in_up[4:-4]], 1),
                                       np.stack([tx, in_up[4:-4] + teeth], 1)[::-1]]), (222, 228, 232, 255))
        else:
            _stroke(img, np.stack([x, mid], 1), _rgba(tuple(c * 0.55 for c in sp.lips)), self.line)
        shine = _rgba(tuple(min(c * 1.2, 255) for c in sp.lips))              # light on the lower lip
        _fill(img, _ellipse(self.cx, (in_low[12] + out_low[12]) / 2 + 0.02 * self.mw, 0.3 * mw, 0.05 * self.mw), shine)

    def render(self, e: Expression, opening: float, width: float, blink: float, gaze, pose, light) -> np.ndarray:
        """One BGR uint8 frame: features drawn on the head, the head moved by `pose` (roll deg, dx, dy, scale),
        the camera's exposure and white balance applied by `light`, a (256, 1, 3) lookup table."""
        head = self.head.copy()
        for side in (-1, 1):
            self._eye(head, side, e, blink, gaze)
            self._brow(head, side, e)
        self._mouth(head, e, opening, width)
        roll, dx, dy, scale = pose
        m = cv2.getRotationMatrix2D((self.cx, self.cy + 1.1 * self.h), roll, scale)   # pivot at the neck
        m[:, 2] += (dx, dy)
        head = warp_affine(head, m)      # not cv2.warpAffine: its bytes depend on the CPU (features/warp.py)
        a = head[..., 3].astype(np.float32) * (1 / 255)
        frame = cv2.blendLinear(cv2.cvtColor(head, cv2.COLOR_BGRA2BGR), self.backdrop, a, 1 - a)
        frame = cv2.blendLinear(self.clothes, frame, self.clothes_alpha, 1 - self.clothes_alpha)
        return cv2.LUT(frame, light)
