from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _private_davel_home(tmp_path_factory):
    """Tests never touch the user's cache: DAVEL_HOME points at a temp dir."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DAVEL_HOME", str(tmp_path_factory.mktemp("davel_home")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny training set of :func:`helpers.make_dataset`: (annotations, features)."""
    from helpers import make_dataset

    return make_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def standin_weights(tmp_path_factory) -> Path:
    """Extractor weights (salt 0, original layouts and file names) written once per session."""
    from weights.standin_files import write_standins

    return write_standins(tmp_path_factory.mktemp("weights"), salt=0, detectors=False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny UnAV checkpoint in the official layout (``module.`` keys, EMA weights) with
    four class names: cheap to load, for tests of the chain around the model."""
    import torch

    from davel.detectors.unav import UnAVDetector

    torch.manual_seed(0)
    m = UnAVDetector(embd_dim=32, head_dim=32, num_classes=4, dependency_dim=16)
    path = tmp_path_factory.mktemp("tiny") / "tiny_unav.pth"
    torch.save({"state_dict_ema": {f"module.{k}": v for k, v in m.state_dict().items()},
                "davel": {"labels": ["dog", "car", "bell", "guitar"],
                          "timebase": {"fps": 25.0, "stride": 8, "window": 24}}}, path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two contending ones (CPU-time budget)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
