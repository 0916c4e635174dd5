"""Long videos cut into overlapping windows (davel.windows)."""
from davel.windows import window_starts


def test_windows_cover_everything_with_overlap():
    assert window_starts(100, 224) == [0]
    s = window_starts(1000, 224)
    assert s[0] == 0 and s[-1] == 1000 - 224
    assert all(b - a <= 112 for a, b in zip(s, s[1:]))
