import pytest

from geta import Budget


def test_ratio_and_absolute_targets():
    assert Budget.size(ratio=50).target(3200.0) == 64.0
    assert Budget.size(bytes=10).target(1e9) == 80.0
    assert Budget.size(bits=12).target(1e9) == 12.0
    assert Budget.bops(ratio=4).target(100.0) == 25.0
    assert Budget.bops(value=7).target(100.0) == 7.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("50x", Budget.size(ratio=50)),
        ("200KB", Budget.size(bytes=200e3)),
        ("1.5MiB", Budget.size(bytes=1.5 * 1024**2)),
        ("bops=30x", Budget.bops(ratio=30)),
        ("bops=2e9", Budget.bops(value=2e9)),
    ],
)
def test_parse(text, expected):
    assert Budget.parse(text) == expected


@pytest.mark.parametrize("bad", ["fifty", "50", "bops=", "10 parsecs"])
def test_parse_rejects_nonsense(bad):
    with pytest.raises(ValueError, match="cannot read budget"):
        Budget.parse(bad)


def test_invalid_budgets():
    with pytest.raises(ValueError):
        Budget.size(ratio=0.5)
    with pytest.raises(ValueError):
        Budget("size")
    with pytest.raises(ValueError):
        Budget.size(bytes=-1)
