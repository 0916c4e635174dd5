"""The audio path in pieces gives the whole-track path's numbers, bit for bit.

Kinds (see tests/helpers.py): exact by construction. The streaming resampler
calls resampy's own inner loop on the same output times, shifted by a whole
number of samples (exact in float64); the streaming VGGish path forms the same
spectrum blocks, examples and model batches as the whole-track functions. So
every comparison here is ``array_equal``, not a tolerance.
"""
import numpy as np
import pytest
import resampy
import torch

from davel.errors import InputError
from extractors.audio import decode_audio, open_audio
from extractors.resample import StreamResampler, resample_pieces
from extractors.vggish import embed_examples, frame_examples, log_mel, stream_features

from media_files import write_video


def _cut(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    pieces, i, k = [], 0, 0
    while i < len(x):
        pieces.append(x[i:i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return pieces


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_resampling_in_pieces_equals_resampy_on_the_whole_signal(rate):
    x = np.random.default_rng(rate).standard_normal(rate * 19 + 37)
    whole = resampy.resample(x, rate, 16000, filter="kaiser_best")
    for sizes in ([len(x)], [1024], [300001, 7, 777777], [1] * 3000 + [len(x)]):
        got = np.concatenate(list(resample_pieces(_cut(x, sizes), rate)))
        assert got.shape == whole.shape == (int(len(x) * 16000 / rate),)
        assert np.array_equal(got, whole), (rate, sizes[:3])


def test_resampler_keeps_only_a_filter_width_of_input():
    r = StreamResampler(44100)
    x = np.random.default_rng(0).standard_normal(44100 * 60)
    for piece in _cut(x, [4410]):
        r.push(piece)
        assert sum(len(p) for p in r._pieces) < 44100 * 10  # of the 60 s pushed
    r.finish()


def test_16k_pieces_pass_unchanged():
    x = np.arange(5.0)
    r = StreamResampler(16000)
    assert np.array_equal(r.push(x), x) and len(r.finish()) == 0


class _Recorder(torch.nn.Module):
    """A stand-in model that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.clone())
        return x.mean(dim=(1, 2))[:, :1].repeat(1, 128)


@pytest.mark.parametrize("rate,seconds", [(44100, 170.3), (16000, 90.0), (48000, 1.0), (16000, 0.975)])
def test_vggish_in_pieces_sees_the_whole_track_path_batches(rate, seconds):
    # 170 s spans three 82 s spectrum blocks; 0.975 s is exactly one example.
    x = 0.1 * np.random.default_rng(1).standard_normal(int(rate * seconds))
    wave = x if rate == 16000 else resampy.resample(x, rate, 16000, filter="kaiser_best")
    whole_model, piece_model = _Recorder(), _Recorder()
    whole = embed_examples(frame_examples(log_mel(wave)), whole_model).numpy()
    got = stream_features(_cut(x, [1024]), rate, piece_model)
    assert got.shape == whole.shape and np.array_equal(got, whole)
    assert len(piece_model.batches) == len(whole_model.batches)
    assert all(torch.equal(a, b) for a, b in zip(piece_model.batches, whole_model.batches))


def test_vggish_in_pieces_too_short_is_an_input_error():
    with pytest.raises(InputError, match="too short"):
        stream_features([np.zeros(15599)], 16000, _Recorder())


def test_reader_pieces_are_the_decoded_track(tmp_path, fixtures):
    path = fixtures / "media" / "sample_a.mp4"
    with open_audio(path) as reader:
        assert (reader.sample_rate, reader.source_channels, reader.adts_copy) == (44100, 2, True)
        pieces = list(reader.pieces())
    assert len(pieces) > 100 and reader.num_samples == sum(map(len, pieces))
    assert np.array_equal(np.concatenate(pieces), decode_audio(path).samples)
    assert open_audio(write_video(tmp_path / "mute.mp4", 5, audio=None, size=(64, 48))) is None
