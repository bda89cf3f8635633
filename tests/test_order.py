"""EpochShuffle across processes: every problem once per epoch, exact skips on resume."""

import pytest

from lapo_lightning.order import EpochShuffle


def _shards(size: int, world: int, epoch: int = 0, **kwargs) -> list[list[int]]:
    shards = []
    for rank in range(world):
        sampler = EpochShuffle(size, seed=3, num_replicas=world, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    return shards


@pytest.mark.parametrize("epoch", [0, 1])
def test_two_processes_split_the_one_process_order(epoch):
    single = EpochShuffle(24, seed=3)
    single.set_epoch(epoch)
    order = list(single)
    rank0, rank1 = _shards(24, 2, epoch)
    assert rank0 == order[0::2] and rank1 == order[1::2]
    assert sorted(rank0 + rank1) == list(range(24))  # each problem exactly once
    # Step k (B = 2 per process) trains on problems 4k..4k+3 of the one-process order:
    # the same problems as one process with B = 4, only split between the two.
    for k in range(6):
        assert sorted(rank0[2 * k:2 * k + 2] + rank1[2 * k:2 * k + 2]) == sorted(order[4 * k:4 * k + 4])


def test_uneven_sizes_pad_with_the_head_of_the_order():
    order = list(EpochShuffle(5, seed=3))
    rank0, rank1 = _shards(5, 2)
    assert len(rank0) == len(rank1) == 3 == len(EpochShuffle(5, 3, num_replicas=2, rank=1))
    assert sorted(set(rank0 + rank1)) == list(range(5))
    assert rank1[-1] == order[0]  # the one padded index repeats the first problem
    assert _shards(1, 3) == [[0], [0], [0]]  # more processes than problems


def test_resume_skips_exactly_what_each_process_trained():
    full = _shards(24, 2)
    for rank in range(2):
        sampler = EpochShuffle(24, seed=3, num_replicas=2, rank=rank)
        sampler.skip_once(0, 8)  # two steps of B = 2 on each of the two processes
        assert list(sampler) == full[rank][4:]
        assert list(sampler) == full[rank]  # once only


def test_uneven_resume_keeps_the_padding_of_the_uninterrupted_run():
    full = _shards(7, 2)  # 8 slots: the last one repeats the first problem
    for rank in range(2):
        sampler = EpochShuffle(7, seed=3, num_replicas=2, rank=rank)
        sampler.skip_once(0, 4)
        assert list(sampler) == full[rank][2:]


def test_resume_on_another_number_of_processes_trains_the_rest_of_the_epoch_once():
    order = list(EpochShuffle(24, seed=3))
    rest = []
    for rank in range(3):  # 8 problems done on 2 processes, resumed on 3
        sampler = EpochShuffle(24, seed=3, num_replicas=3, rank=rank)
        sampler.skip_once(0, 8)
        rest.append(list(sampler))
    # 16 left, padded to 18 so the three processes run the same number of steps
    assert {len(r) for r in rest} == {6} and sorted(set(sum(rest, []))) == sorted(order[8:])


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="rank 2"):
        EpochShuffle(8, 0, num_replicas=2, rank=2)
