"""EfficientAT `mn04_as` (Schmid et al. 2023): MobileNetV3 width 0.4 AudioSet tagger, with its mel front end.

`MelFrontEnd` turns a 32 kHz mono wave into the network's normalised log-mel (eval mode of EfficientAT's
AugmentMelSTFT: no fmin/fmax jitter, no masking); `MobileNetAudioSet` maps that mel to 527 AudioSet logits and the
384-d embedding (global average of the last feature map, the input of the classifier MLP). Module names follow the
original checkpoint, so `mn04_as_mAP_432.pt` (312 keys) loads with strict=True.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

SAMPLE_RATE = 32000
HOP = 320                 # samples per mel frame: 100 frames per second
EMBED_DIM = 384
NUM_CLASSES = 527         # AudioSet ontology order (index 0 = Speech)

_bn = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)

# [in, expanded, out, kernel, stride, squeeze-excitation, hardswish (else ReLU)]: MobileNetV3-Large at width 0.4.
BLOCKS = [
    (8, 8, 8, 3, 1, False, False), (8, 24, 16, 3, 2, False, False), (16, 32, 16, 3, 1, False, False),
    (16, 32, 16, 5, 2, True, False), (16, 48, 16, 5, 1, True, False), (16, 48, 16, 5, 1, True, False),
    (16, 96, 32, 3, 2, False, True), (32, 80, 32, 3, 1, False, True), (32, 72, 32, 3, 1, False, True),
    (32, 72, 32, 3, 1, False, True), (32, 192, 48, 3, 1, True, True), (48, 272, 48, 3, 1, True, True),
    (48, 272, 64, 5, 2, True, True), (64, 384, 64, 5, 1, True, True), (64, 384, 64, 5, 1, True, True),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: nearest multiple of `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcitation(nn.Module):
    """Channel attention: mean over (freq, time) -> Linear -> ReLU -> Linear -> plain sigmoid -> rescale."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, squeeze), nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]


class ConcurrentSE(nn.Module):
    """EfficientAT's ConcurrentSEBlock with only the channel SE (mn04's config), whose max-aggregation over a single
    branch is the branch itself. The ModuleList keeps the checkpoint's key names (`conc_se_layers.0.fc1...`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, make_divisible(channels // 4, 8))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """[1x1 expand-BN-act] -> depthwise kxk-BN-act -> [SE] -> 1x1 project-BN; residual when shapes allow."""

    def __init__(self, cin: int, expanded: int, cout: int, kernel: int, stride: int, se: bool, hardswish: bool):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, norm_layer=_bn, activation_layer=act))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride=stride, groups=expanded,
                                           norm_layer=_bn, activation_layer=act))
        if se:
            layers.append(ConcurrentSE(expanded))
        layers.append(Conv2dNormActivation(expanded, cout, 1, norm_layer=_bn, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetAudioSet(nn.Module):
    """Mel [N,1,128,T] -> (logits [N,527], embedding [N,384])."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            Conv2dNormActivation(1, 8, 3, stride=2, norm_layer=_bn, activation_layer=nn.Hardswish),
            *(InvertedResidual(*cfg) for cfg in BLOCKS),
            Conv2dNormActivation(64, EMBED_DIM, 1, norm_layer=_bn, activation_layer=nn.Hardswish))
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
            nn.Linear(EMBED_DIM, 512), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(512, NUM_CLASSES))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.classifier[:2](self.features(mel))
        return self.classifier[2:](embedding), embedding


def kaldi_mel_banks(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> torch.Tensor:
    """Kaldi-style triangular mel filters [n_mels, n_fft // 2] (torchaudio.compliance.kaldi.get_mel_banks without
    VTLN warping): mel = 1127 ln(1 + f/700), triangles spaced evenly in mel, FFT bin k at k*sr/n_fft Hz."""
    def mel(f):
        return 1127.0 * (1.0 + f / 700.0).log() if torch.is_tensor(f) else 1127.0 * math.log(1.0 + f / 700.0)

    mel_low, mel_high = mel(fmin), mel(fmax)
    delta = (mel_high - mel_low) / (n_mels + 1)
    index = torch.arange(n_mels).unsqueeze(1)
    left, center, right = (mel_low + (index + k) * delta for k in (0.0, 1.0, 2.0))
    bin_mels = mel(sr / n_fft * torch.arange(n_fft // 2, dtype=torch.float32)).unsqueeze(0)
    up = (bin_mels - left) / (center - left)
    down = (right - bin_mels) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)


class MelFrontEnd(nn.Module):
    """32 kHz wave [N,S] -> normalised log-mel [N,128,T], T = 1 + (S-1)//320.

    Pre-emphasis 0.97 as a valid convolution (one sample shorter), STFT n_fft 1024 with a symmetric Hann of 800
    centred in the frame, hop 320, reflect padding; power spectrum; Kaldi mel 128 bins 0-15000 Hz plus a zero column
    for the Nyquist bin; log(x + 1e-5); (x + 4.5) / 5.
    """

    def __init__(self, n_mels: int = 128, n_fft: int = 1024, win_length: int = 800, fmin: float = 0.0,
                 fmax: float = 15000.0):
        super().__init__()
        self.n_fft, self.win_length = n_fft, win_length
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        banks = kaldi_mel_banks(n_mels, n_fft, SAMPLE_RATE, fmin, fmax)
        self.register_buffer("mel_basis", F.pad(banks, (0, 1)), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(wave.unsqueeze(1), self.preemphasis).squeeze(1)
        spec = torch.stft(x, self.n_fft, hop_length=HOP, win_length=self.win_length, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1)
        mel = torch.matmul(self.mel_basis, power)
        return ((mel + 1e-5).log() + 4.5) / 5.0


def load_model(path: Path, device: str = "cpu") -> MobileNetAudioSet:
    """A ready-to-run (eval mode) network with the checkpoint's weights, loaded strictly."""
    model = MobileNetAudioSet()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval().to(device)
