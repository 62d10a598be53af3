"""Miniature corpus trees for tests: the real folder layouts and file names, with tiny generated media.

Media are made with PyAV (fractions of a second, 64x48 px), so a whole tree costs milliseconds. Each builder
returns the root and documents what an adapter should find there.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_CODECS = {".mp4": ("mpeg4", "aac"), ".avi": ("mpeg4", "pcm_s16le"), ".flv": ("flv", "libmp3lame")}


def _tone(seconds: float, rate: int, silent: bool = False) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.zeros_like(t, dtype=np.int16) if silent else (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def _encode_audio(container, stream, samples: np.ndarray, rate: int) -> None:
    chunk = stream.codec_context.frame_size or 1024
    for start in range(0, len(samples), chunk):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + chunk], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def audio(path: Path, seconds: float = 0.3, rate: int = 16000, silent: bool = False) -> Path:
    """A mono tone (or digital silence): .wav as PCM, .m4a as AAC, .mp3 as MP3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = {".wav": "pcm_s16le", ".m4a": "aac", ".mp3": "libmp3lame"}[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        _encode_audio(container, stream, _tone(seconds, rate, silent), rate)
    return path


def video(path: Path, seconds: float = 0.4, fps: int = 10, size: tuple[int, int] = (64, 48),
          with_audio: bool = True, rotation: int = 0) -> Path:
    """Moving noise frames (+ a tone track unless `with_audio=False`); container and codecs from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vcodec, acodec = VIDEO_CODECS[path.suffix]
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(vcodec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        rate = 44100 if acodec == "libmp3lame" else 16000   # FLV takes MP3 at 44.1 kHz
        sound = container.add_stream(acodec, rate=rate, layout="mono") if with_audio else None
        for i in range(int(seconds * fps)):
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _encode_audio(container, sound, _tone(seconds, rate), rate)
    return path


def text(path: Path, content: str = "this is not media\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated(path: Path) -> Path:
    """An mp4 cut in half: the index (moov atom, written last) is gone."""
    video(path, seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zeroed(path: Path) -> Path:
    """An mp4 whose header is intact but whose media data are zeros: it opens, and no packet decodes."""
    video(path, seconds=1.0)
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return path


def ravdess(root: Path) -> Path:
    """Speech AV/video-only/audio-only of actor 01, song audio + AV of actor 02, one invalid code (emotion 09).
    Expect 5 clips (3 speech + 2 song), 1 `bad_name`."""
    video(root / "Video_Speech_Actor_01/Actor_01/01-01-03-01-01-01-01.mp4")
    video(root / "Video_Speech_Actor_01/Actor_01/02-01-03-01-01-01-01.mp4", with_audio=False)
    audio(root / "Audio_Speech_Actors_01-24/Actor_01/03-01-03-01-01-01-01.wav")
    audio(root / "Audio_Song_Actors_01-24/Actor_02/03-02-04-02-02-01-02.wav")
    video(root / "Video_Song_Actor_02/Actor_02/01-02-04-02-02-01-02.mp4")
    audio(root / "Audio_Speech_Actors_01-24/Actor_01/03-01-09-01-01-01-01.wav")
    return root


def crema_d(root: Path) -> Path:
    """Actor 1001 as flv + wav + mp3 of one utterance, actor 1091 wav only, demographics CSV, and CREMA-D's real
    zero-byte file 1076_MTI_SAD_XX.wav. Expect 3 clips (one with 2 alternatives), 1 `empty_file` at ingest."""
    video(root / "VideoFlash/1001_DFA_ANG_XX.flv")
    audio(root / "AudioWAV/1001_DFA_ANG_XX.wav")
    audio(root / "AudioMP3/1001_DFA_ANG_XX.mp3", rate=44100)
    audio(root / "AudioWAV/1091_IEO_HAP_HI.wav")
    empty(root / "AudioWAV/1076_MTI_SAD_XX.wav")
    text(root / "VideoDemographics.csv", "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
         "1091,29,Female,Asian,Not Hispanic\n1076,25,Female,African American,Not Hispanic\n")
    return root


def enterface05(root: Path) -> Path:
    """Regular clips, subject 11's mis-named `s12_*` file, and a clip with no sentence folder.
    Expect 4 clips, speakers s1, s11, s6."""
    video(root / "subject 1/anger/sentence 1/s1_an_1.avi")
    video(root / "subject 1/happiness/sentence 2/s1_ha_2.avi")
    video(root / "subject 11/fear/sentence 3/s12_fe_3.avi")
    video(root / "subject 6/sadness/s6_sa_4.avi")
    return root


def savee(root: Path) -> Path:
    """DC a01 as wav and avi (one clip, avi preferred), JE sa03, KL su15, JK n30 as wav, one stray file.
    Expect 4 clips, 1 `bad_name`."""
    audio(root / "AudioData/DC/a01.wav")
    video(root / "AudioVisualClip/DC/a01.avi")
    audio(root / "AudioData/JE/sa03.wav")
    audio(root / "AudioData/KL/su15.wav")
    audio(root / "AudioData/JK/n30.wav")
    audio(root / "AudioData/JK/x01.wav")
    return root


def afew(root: Path) -> Path:
    """Train/Val clips in emotion folders, an unlabelled test clip, and a feature folder without media.
    Expect 2 clips (train, dev), 1 `no_label`."""
    video(root / "Train_AFEW/Angry/000046280.avi", with_audio=False)
    video(root / "Val_AFEW/Happy/000123400.avi")
    video(root / "Test_AFEW/000456789.avi")
    text(root / "Train_AFEW/AlignedFaces_LBPTOP_Points/Faces/000046280/frame_det_00_000001.txt", "0 0 1 1\n")
    return root


EMO_EVALUATION = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[0.1000 - 0.9000]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
C-F1:\tNeutral;\t(curious)
A-E3:\tval 3; act 2; dom  2;\t()
A-F1:\tval 3; act 2; dom  1;\t()

[1.0100 - 1.8925]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 3.5000]
C-E1:\tFrustration; Anger;\t()
C-E2:\tFrustration;\t()
A-E1:\tval 2; act 4; dom  4;\t()

[2.0000 - 2.9500]\tSes01F_impro01_F002\texc\t[4.0000, 4.0000, 3.0000]
C-E2:\tExcited; Happiness;\t()
A-E3:\tval 4; act 4; dom  3;\t()

[9.5000 - 10.2000]\tSes01F_impro01_M003\txxx\t[2.5000, 3.0000, 3.0000]
C-E2:\tNeutral;\t()
C-E3:\tAnger;\t()
"""

TRANSCRIPTION = """Ses01F_impro01_F000 [000.1000-000.9000]: Excuse me.
Ses01F_impro01_M001 [001.0100-001.8925]: Do you have your forms?
Ses01F_impro01_F002 [002.0000-002.9500]: Yeah.
"""


def iemocap(root: Path) -> Path:
    """Session1 dialog (3 s) with 4 labelled utterances, the last beyond the recording (`bad_segment` at ingest);
    a Session2 dialog recording without EmoEvaluation (`no_label`), Session3 labels without their recording
    (`missing_media`) and an AppleDouble `._` file (ignored). Expect 3 clips: speakers Ses01_F (2) and Ses01_M."""
    session = root / "IEMOCAP_full_release/Session1/dialog"
    audio(session / "wav/Ses01F_impro01.wav", seconds=3.0)
    text(session / "EmoEvaluation/Ses01F_impro01.txt", EMO_EVALUATION)
    text(session / "EmoEvaluation/._Ses01F_impro01.txt", "\x00\x05\x16\x07 resource fork")
    text(session / "EmoEvaluation/Categorical/Ses01F_impro01_e2_cat.txt", "Ses01F_impro01_F000 :Neutral; ()\n")
    text(session / "transcriptions/Ses01F_impro01.txt", TRANSCRIPTION)
    audio(root / "IEMOCAP_full_release/Session2/dialog/wav/Ses02M_script01_1.wav", seconds=0.5)
    text(root / "IEMOCAP_full_release/Session3/dialog/EmoEvaluation/Ses03M_impro02.txt",
         "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
         "[1.0000 - 2.0000]\tSes03M_impro02_M000\tsad\t[1.5000, 2.0000, 2.0000]\n")
    return root


MSP_EVALUATION = """UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:3.800000; V:1.600000; D:3.400000 ; N:3.600000;
rater2; Angry; Frustrated; A:4.000000; V:1.000000; D:4.000000; N:4.000000;

UTD-IMPROV-S01A-M01-R-MF02.avi; N; A:2.600000; V:3.000000; D:3.000000 ; N:3.200000;
rater3; Neutral; ; A:2.600000; V:3.000000; D:3.000000; N:3.200000;

UTD-IMPROV-S02H-F01-S-FM03.avi; X; A:3.000000; V:3.500000; D:NaN ; N:3.000000;
"""


def msp_improv(root: Path) -> Path:
    """One utterance as avi + wav (avi preferred), a read utterance, a no-agreement (X) one with NaN dominance,
    and a wav with no Evaluation line (`no_label`). Expect 3 clips, speakers F01 and M01."""
    text(root / "Evaluation.txt", MSP_EVALUATION)
    video(root / "session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.avi")
    audio(root / "session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav")
    audio(root / "session1/S01A/R/MSP-IMPROV-S01A-M01-R-MF02.wav")
    audio(root / "session1/S02H/S/MSP-IMPROV-S02H-F01-S-FM03.wav")
    audio(root / "session1/S02H/S/MSP-IMPROV-S02H-F01-S-FM04.wav")
    return root


def mead(root: Path) -> Path:
    """Nested official layout: M003 angry level 1 clip 001 as front video, left_30 video (another view, left out
    by default) and m4a audio (alternative); an audio-only utterance; a W009 front clip at 256x256.
    Expect 3 clips, speakers M003 and W009."""
    video(root / "M003/video/front/angry/level_1/001.mp4")
    video(root / "M003/video/left_30/angry/level_1/001.mp4")
    audio(root / "M003/audio/angry/level_1/001.m4a", rate=48000)
    audio(root / "M003/audio/neutral/level_1/002.m4a", rate=48000)
    video(root / "W009/video/front/happy/level_3/005.mp4", size=(256, 256), with_audio=False)
    return root


def huge_table(path: Path) -> Path:
    """An mp4 whose time-to-sample table claims ~4 billion entries: FFmpeg answers "Cannot allocate memory"
    (ENOMEM), although the file is merely corrupt."""
    video(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"stts") + 8          # after the version/flags word: the entry count
    data[at:at + 4] = b"\xff\xff\xff\xf0"
    path.write_bytes(bytes(data))
    return path


GENERIC_REGEX = r"(?P<speaker>s\d)_(?P<emotion>[a-z]+)"


def generic_with_links(tmp: Path) -> Path:
    """A generic-adapter corpus (`GENERIC_REGEX`) at tmp/corpus: s1 a real file, s2 inside a linked folder
    (tmp/elsewhere), s3 a dangling link, s4 a link to itself (loop), s5 a FIFO, s6 text named .wav.
    Expect clips s1 and s2; s3-s5 `unreadable`, s6 `undecodable`."""
    elsewhere = audio(tmp / "elsewhere/s2_sad_1.wav").parent
    root = tmp / "corpus"
    audio(root / "s1_happy_1.wav")
    (root / "linked").symlink_to(elsewhere)
    (root / "s3_angry_1.wav").symlink_to(root / "gone.wav")
    (root / "s4_angry_1.wav").symlink_to(root / "s4_angry_1.wav")
    os.mkfifo(root / "s5_angry_1.wav")
    text(root / "s6_angry_1.wav")
    return root
