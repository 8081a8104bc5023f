"""consensus/units.py: the one byte-count formatter (binary units, one decimal dropped when 0)."""

from distributeai.consensus.units import human_bytes, human_rate


def test_bytes_below_a_kib_are_counted_whole():
    assert [human_bytes(n) for n in (0, 1, 12, 1023)] == ["0 B", "1 B", "12 B", "1023 B"]


def test_larger_counts_take_binary_units_and_one_decimal():
    assert human_bytes(1024) == "1 KiB"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(40_000) == "39.1 KiB"
    assert human_bytes(1 << 20) == "1 MiB"
    assert human_bytes(300_000_000) == "286.1 MiB"
    assert human_bytes(3 << 30) == "3 GiB"
    assert human_bytes(5 << 40) == "5 TiB"
    assert human_bytes(5000 << 40) == "5000 TiB"


def test_a_count_that_rounds_to_the_next_unit_is_said_in_it():
    assert human_bytes((1 << 20) - 1) == "1 MiB"
    assert human_bytes((1 << 30) - 10) == "1 GiB"


def test_negative_counts_and_rates():
    assert human_bytes(-1536) == "-1.5 KiB"
    assert human_rate(1.5 * (1 << 20)) == "1.5 MiB/s"
    assert human_rate(0) == "0 B/s"
