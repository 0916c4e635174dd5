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


@pytest.fixture(scope="session")
def standin_weights(tmp_path_factory) -> Path:
    """Extractor weights (salt 0, original layouts and file names) written once per session."""
    from weights.standin_files import write_standins

    return write_standins(tmp_path_factory.mktemp("weights"), salt=0, detectors=False)
