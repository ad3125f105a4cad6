"""Resources arithmetic."""

from placement import Resources


def test_arithmetic() -> None:
    a = Resources(500, 256)
    b = Resources(250, 128)
    assert a + b == Resources(750, 384)
    assert a - b == Resources(250, 128)
    assert b * 3 == Resources(750, 384)
    assert 2 * b == Resources(500, 256)
    assert Resources.ZERO.is_zero()
    assert not a.is_zero()


def test_fits_every_dimension() -> None:
    cap = Resources(1000, 1024)
    assert Resources(1000, 1024).fits(cap)
    assert not Resources(1001, 1).fits(cap)
    assert not Resources(1, 1025).fits(cap)
    assert Resources.ZERO.fits(cap)


def test_headroom_and_count() -> None:
    assert Resources(500, 2048).headroom(Resources(1000, 1024)) == Resources(500, 0)
    assert Resources(250, 256).count_in(Resources(1000, 1024)) == 4
    assert Resources(0, 300).count_in(Resources(0, 1024)) == 3
    assert Resources(100, 100).count_in(Resources(-1, 1000)) == 0
    assert str(Resources(250, 512)) == "250m CPU, 512 MiB"
