"""VGGish: 16 kHz audio -> log-mel examples -> 128-d embeddings (UnAV-100 setting).

Front end (float64 numpy, as the reference's ``mel_features``): 25 ms periodic
Hann frames every 10 ms, |rFFT| of length 512, 64 HTK mel bands 125-7500 Hz,
``log(mel + 0.01)``; examples of 96 frames every 32 frames (0.96 s windows,
0.32 s hop: UnAV-100's choice, VGGish's own default hop is 0.96 s).

The model takes the layout of torchvggish's ``vggish-10086976.pth`` unchanged.
Its output after the last ReLU is what video_features saved and UnAV-100
published; the AudioSet PCA + 8-bit quantisation is optional (:class:`VGGishPCA`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from extractors.audio import VGGISH_RATE, AudioTrack
from extractors.resample import resample_pieces
from weights import store
from weights.errors import InputError, WeightsError

FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_HOP = 160  # 10 ms
FFT_LENGTH = 512  # next power of two above FRAME_LENGTH
NUM_BANDS = 64
MEL_LOW_HZ, MEL_HIGH_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EXAMPLE_HOP = 32  # 0.32 s, UnAV-100
EMBEDDING_SIZE = 128
QUANT_MIN, QUANT_MAX = -2.0, 2.0
MIN_SAMPLES_16K = FRAME_LENGTH + (EXAMPLE_FRAMES - 1) * FRAME_HOP  # 15600: one example

_SPECTRUM_BLOCK = 8192  # frames per rFFT block: bounds memory on long audio


# ---------------------------------------------------------------- front end


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``1127 ln(1 + hz / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(num_bins: int = FFT_LENGTH // 2 + 1, num_bands: int = NUM_BANDS,
               sample_rate: int = VGGISH_RATE, low_hz: float = MEL_LOW_HZ,
               high_hz: float = MEL_HIGH_HZ) -> np.ndarray:
    """``[num_bins, num_bands]`` triangular weights, triangles evenly spaced in mel.

    Each band rises linearly (in mel) from its lower edge to its centre and falls
    to its upper edge; the DC bin gets no weight. Same construction as VGGish's
    ``spectrogram_to_mel_matrix``.
    """
    bin_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_bins))
    edges = np.linspace(hertz_to_mel(low_hz), hertz_to_mel(high_hz), num_bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bin_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def periodic_hann(length: int) -> np.ndarray:
    """Hann window of period ``length`` (ends just before the closing zero)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi / length * np.arange(length))


def log_mel(wave16k: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram ``float64 [F, 64]`` of mono 16 kHz audio ``[n]``.

    ``F = 1 + (n - 400) // 160`` (no padding; 0 when ``n < 400``).
    """
    x = np.ascontiguousarray(wave16k, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"log_mel expects mono audio [n], got shape {x.shape}")
    if len(x) < FRAME_LENGTH:
        return np.zeros((0, NUM_BANDS), np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::FRAME_HOP]
    return np.concatenate([_log_mel_rows(frames[start:start + _SPECTRUM_BLOCK])
                           for start in range(0, len(frames), _SPECTRUM_BLOCK)])


def _log_mel_rows(frames: np.ndarray) -> np.ndarray:
    """``[B, 400]`` frames -> ``float64 [B, 64]`` log-mel rows (one spectrum block)."""
    magnitude = np.abs(np.fft.rfft(frames * periodic_hann(FRAME_LENGTH), FFT_LENGTH))
    return np.log(np.dot(magnitude, _MEL) + LOG_OFFSET)


def frame_examples(log_mel: np.ndarray, window: int = EXAMPLE_FRAMES,
                   hop: int = EXAMPLE_HOP) -> np.ndarray:
    """``[F, 64]`` -> ``float32 [N, window, 64]``, ``N = 1 + (F - window) // hop``
    (``N = 0`` when ``F < window``)."""
    lm = np.asarray(log_mel)
    if len(lm) < window:
        return np.zeros((0, window, lm.shape[1]), np.float32)
    views = np.lib.stride_tricks.sliding_window_view(lm, window, axis=0)[::hop]
    # sliding_window_view puts the window axis last: [N, 64, window] -> [N, window, 64].
    return np.ascontiguousarray(views.transpose(0, 2, 1), dtype=np.float32)


def num_examples(num_samples_16k: int) -> int:
    """How many examples ``num_samples_16k`` samples at 16 kHz give."""
    if num_samples_16k < MIN_SAMPLES_16K:
        return 0
    frames = 1 + (num_samples_16k - FRAME_LENGTH) // FRAME_HOP
    return 1 + (frames - EXAMPLE_FRAMES) // EXAMPLE_HOP


_MEL = mel_matrix()


# ---------------------------------------------------------------- model


class VGGish(nn.Module):
    """VGGish (AudioSet), torchvggish layout.

    Input ``[N, 1, 96, 64]`` log-mel examples (time x mel), float32.
    ``features``: four conv blocks (64 | 128 | 256, 256 | 512, 512 channels, 3x3,
    each block ending in a 2x2 max-pool) -> ``[N, 512, 6, 4]``;
    ``embeddings``: 12288 -> 4096 -> 4096 -> 128, each Linear followed by ReLU.
    Output ``[N, 128]``, non-negative.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for block in ((64,), (128,), (256, 256), (512, 512)):
            for out_ch in block:
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_SIZE), nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # [N, 512, 6, 4]
        # The TF original flattens NHWC; its first Linear expects channel-last order.
        x = x.permute(0, 2, 3, 1).flatten(1)  # [N, 6 * 4 * 512]
        return self.embeddings(x)


class VGGishPCA(nn.Module):
    """AudioSet post-processing: PCA with whitening, clip to [-2, 2], 8-bit quantise.

    ``[N, 128]`` raw embeddings -> ``[N, 128]`` float32 integers 0..255.
    Buffers keep the file's names and shapes: ``pca_eigen_vectors [128, 128]``
    (rows are components), ``pca_means [128]``.
    """

    def __init__(self, eigen_vectors: Tensor | np.ndarray, means: Tensor | np.ndarray) -> None:
        super().__init__()
        self.register_buffer("pca_eigen_vectors", torch.as_tensor(eigen_vectors, dtype=torch.float32))
        self.register_buffer("pca_means", torch.as_tensor(means, dtype=torch.float32).reshape(-1))

    def forward(self, x: Tensor) -> Tensor:
        centred = x.t() - self.pca_means[:, None]  # [128, N]
        projected = torch.mm(self.pca_eigen_vectors, centred).t()
        clipped = projected.clamp(QUANT_MIN, QUANT_MAX)
        return torch.round((clipped - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN)))


# ---------------------------------------------------------------- loading


def load_vggish(source: str | Path | Mapping[str, Tensor]) -> VGGish:
    """A VGGish in eval mode from ``vggish-10086976.pth`` (or a state dict in its layout)."""
    where = store.describe_source(source)
    state = store.load_state_dict_file(source, "VGGish (vggish-10086976.pth)")
    model = VGGish()
    store.check_layout(state, model.state_dict(), where, "VGGish (vggish-10086976.pth)")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def load_pca(source: str | Path | Mapping[str, Any]) -> VGGishPCA:
    """The PCA parameters from torchvggish's ``vggish_pca_params-970ea276.pth``
    (numpy arrays or tensors inside) or Google's ``vggish_pca_params.npz``."""
    where = store.describe_source(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        params = _load_npz(path) if path.suffix == ".npz" else store.load_state(path, allow_numpy=True)
    else:
        params = source
    if not isinstance(params, Mapping) or not {"pca_eigen_vectors", "pca_means"} <= set(params):
        raise WeightsError(f"{where} is not a VGGish PCA file "
                           "(needs pca_eigen_vectors [128, 128] and pca_means [128])")
    try:
        vectors = torch.as_tensor(np.asarray(params["pca_eigen_vectors"]) if not isinstance(
            params["pca_eigen_vectors"], Tensor) else params["pca_eigen_vectors"])
        means = torch.as_tensor(np.asarray(params["pca_means"]) if not isinstance(
            params["pca_means"], Tensor) else params["pca_means"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{where}: PCA parameters are not numeric arrays") from exc
    if (tuple(vectors.shape) != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.numel() != EMBEDDING_SIZE
            or not vectors.is_floating_point() or not means.is_floating_point()):
        raise WeightsError(f"{where}: PCA shapes are {tuple(vectors.shape)} and {tuple(means.shape)}, "
                           f"expected float ({EMBEDDING_SIZE}, {EMBEDDING_SIZE}) and ({EMBEDDING_SIZE},)")
    return VGGishPCA(vectors, means)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise WeightsError(f"{path} is not a readable .npz file ({type(exc).__name__})") from exc


# ---------------------------------------------------------------- whole path


@torch.no_grad()
def embed_examples(examples: np.ndarray, model: VGGish, device: torch.device | str = "cpu",
                   batch_size: int = 32) -> Tensor:
    """``float32 [N, 96, 64]`` -> raw embeddings ``[N, 128]`` (on ``device``), in batches."""
    rows = []
    for start in range(0, len(examples), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(examples[start:start + batch_size]))
        rows.append(model(x[:, None].to(device)))
    return torch.cat(rows) if rows else torch.zeros((0, EMBEDDING_SIZE), device=device)


@torch.no_grad()
def vggish_features(track: AudioTrack, model: VGGish, pca: VGGishPCA | None = None,
                    device: torch.device | str = "cpu", batch_size: int = 32) -> np.ndarray:
    """Decoded audio -> VGGish features ``float32 [N, 128]``, one row per 0.32 s.

    Row ``k`` covers ``[0.32 k, 0.32 k + 0.96)`` s of the decoded audio. Raw
    embeddings by default (the published UnAV-100 features); with ``pca``, the
    AudioSet-style quantised values 0..255. ``model`` must already be on
    ``device``; ``pca`` is moved to it. A video without audio has no track: pass
    ``extractors.audio.silence(seconds)`` instead. Raises InputError when the
    audio is shorter than one example (15600 samples at 16 kHz, 0.975 s).
    """
    if track is None:
        raise ValueError("no audio track: pass extractors.audio.silence(seconds) for silent video")
    return stream_features([track.samples], track.sample_rate, model, pca, device, batch_size)


@torch.no_grad()
def stream_features(pieces: Iterable[np.ndarray], sample_rate: int, model: VGGish,
                    pca: VGGishPCA | None = None, device: torch.device | str = "cpu",
                    batch_size: int = 32) -> np.ndarray:
    """:func:`vggish_features` of audio given in pieces (e.g. ``AudioReader.pieces()``).

    Memory stays at a spectrum block's worth of audio (82 s at 16 kHz) whatever the
    length. The numbers are those of the whole-track path: the 16 kHz resampling
    is bit-identical (``extractors.resample``), and the spectrum blocks, examples
    and model batches are the ones :func:`log_mel`, :func:`frame_examples` and
    :func:`embed_examples` form on the whole track.
    """
    block_samples = FRAME_LENGTH + (_SPECTRUM_BLOCK - 1) * FRAME_HOP  # one block's frames
    block_step = _SPECTRUM_BLOCK * FRAME_HOP
    wave: list[np.ndarray] = []  # 16 kHz samples not yet in a spectrum block
    held = received = 0
    rows = np.zeros((0, NUM_BANDS), np.float64)  # log-mel rows from `rows_base` on
    rows_base = 0
    examples: list[np.ndarray] = []  # float32 [96, 64], waiting for a full batch
    embedded: list[Tensor] = []
    emitted = 0  # examples formed so far

    def add_rows(block: np.ndarray) -> None:
        nonlocal rows, rows_base, emitted
        rows = np.concatenate([rows, block]) if len(rows) else block
        while (emitted * EXAMPLE_HOP + EXAMPLE_FRAMES) - rows_base <= len(rows):
            at = emitted * EXAMPLE_HOP - rows_base
            examples.append(rows[at:at + EXAMPLE_FRAMES].astype(np.float32))
            emitted += 1
            if len(examples) == batch_size:
                embedded.append(embed_examples(np.stack(examples), model, device, batch_size))
                examples.clear()
        drop = emitted * EXAMPLE_HOP - rows_base
        rows, rows_base = rows[drop:], rows_base + drop

    def take_blocks(final: bool) -> None:
        # `wave` starts on a block boundary; a block is taken once its last frame is in
        # (or at the end, whatever frames are left).
        nonlocal wave, held
        while held >= (FRAME_LENGTH if final else block_samples):
            x = np.concatenate(wave) if len(wave) != 1 else wave[0]
            frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::FRAME_HOP]
            add_rows(_log_mel_rows(frames[:_SPECTRUM_BLOCK]))
            if final and len(frames) <= _SPECTRUM_BLOCK:  # every frame is taken
                wave, held = [], 0
                return
            wave, held = [x[block_step:]], len(x) - block_step

    for y in resample_pieces(pieces, sample_rate):
        wave.append(y)
        held += len(y)
        received += len(y)
        take_blocks(final=False)
    if received < MIN_SAMPLES_16K:
        raise InputError(f"audio too short: {received / VGGISH_RATE:.3f} s, VGGish needs at least "
                         f"{MIN_SAMPLES_16K / VGGISH_RATE:.3f} s")
    take_blocks(final=True)
    if examples:
        embedded.append(embed_examples(np.stack(examples), model, device, batch_size))
    emb = torch.cat(embedded)
    if pca is not None:
        emb = pca.to(emb.device)(emb)
    return emb.float().cpu().numpy()
