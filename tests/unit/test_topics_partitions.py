"""Cells and partitions: the names the benchmarks give cells land on partitions of their own."""

from aiokafka.partitioner import murmur2
import pytest

from shunter.streams.topics import cell_partition, cells_on_distinct_partitions


def test_a_cell_partition_is_kafkas_default_partitioner_on_its_name():
    for name in ("default", "cell-0", "eu-west"):
        assert cell_partition(name, 6) == (murmur2(name.encode()) & 0x7FFFFFFF) % 6


def test_cells_on_distinct_partitions_cover_as_many_partitions_as_cells():
    assert cell_partition("cell-0", 4) == cell_partition("cell-1", 4), "why the helper exists"
    for partitions in (1, 4, 8):
        for count in range(1, partitions + 1):
            names = cells_on_distinct_partitions(count, partitions)
            assert len(names) == count
            assert len({cell_partition(n, partitions) for n in names}) == count, (count, partitions)


def test_more_cells_than_partitions_is_an_error():
    with pytest.raises(ValueError):
        cells_on_distinct_partitions(5, 4)
