"""SADP under torch.distributed: real DistributedDataParallel, two processes, gloo on CPU.

``tests/distributed_worker.py`` runs under ``torchrun --nproc_per_node=2`` (and once in a
single process for comparison) for an snnTorch and a SpikingJelly model; these tests read
what each rank saved.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sadp_core.adapters._distributed import shard, shard_length

WORKER = Path(__file__).with_name("distributed_worker.py")
EPOCHS = 3


def _run(*args: str, cwd: Path) -> None:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")


@pytest.fixture(scope="module", params=["snntorch", "spikingjelly"])
def ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both ranks' results of the DDP runs, and the single-process score table of epoch 0."""
    out = tmp_path_factory.mktemp(request.param)
    framework = ("--framework", request.param, "--out", str(out))
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    _run(*torchrun, str(WORKER), *framework, cwd=out)
    _run(str(WORKER), *framework, "--single", cwd=out)
    return {
        "rank": [dict(np.load(out / f"rank{r}.npz")) for r in (0, 1)],
        "single": np.load(out / "single_table0.npy"),
    }


def test_every_rank_draws_the_same_plans(ranks: dict) -> None:
    first, second = ranks["rank"]
    for epoch in range(EPOCHS):
        np.testing.assert_array_equal(first[f"plan{epoch}"], second[f"plan{epoch}"])
    assert len(first["plan0"]) == 1400 and len(first["plan1"]) == 980  # warm-up, then r = 0.3


def test_shards_are_disjoint_and_their_union_is_the_plan(ranks: dict) -> None:
    first, second = ranks["rank"]
    for epoch in range(EPOCHS):
        mine, theirs = first[f"batches{epoch}"], second[f"batches{epoch}"]
        assert len(mine) == len(theirs) == len(first[f"plan{epoch}"]) // 2
        assert np.intersect1d(mine, theirs).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([mine, theirs])), np.sort(first[f"plan{epoch}"]))
    # len(batch_sampler) counted this rank's batches of 50 (the last one short)
    np.testing.assert_array_equal(first["lengths"], [14, 10, 10])
    np.testing.assert_array_equal(second["lengths"], [14, 10, 10])


def test_score_tables_are_identical_on_every_rank(ranks: dict) -> None:
    """When each plan is drawn and after detach(), bit for bit; every example has a score."""
    first, second = ranks["rank"]
    for key in ("table0", "table1", "final"):
        np.testing.assert_array_equal(first[key], second[key])
    assert np.isfinite(first["table0"]).all()  # the warm-up epoch scored all, on either rank
    assert np.isfinite(first["final"]).all()


def test_scores_equal_a_single_process_run_of_the_same_batches(ranks: dict) -> None:
    """Epoch 0 on two ranks (DDP averages the gradients) scores every example as one process
    training on the concatenated global batches does, up to float rounding."""
    np.testing.assert_allclose(ranks["rank"][0]["table0"], ranks["single"], rtol=1e-5)


def test_a_rank_sending_non_finite_scores_corrupts_nothing(ranks: dict) -> None:
    """Rank 1 sent 50 NaN scores in epoch 1: every rank ignored and counted them, and the
    tables stayed finite and identical (checked above)."""
    first, second = ranks["rank"]
    assert int(first["nonfinite"]) == int(second["nonfinite"]) == 50
    assert np.isfinite(first["final"]).all()


def test_resume_from_a_rank_0_checkpoint_reproduces_the_plans(ranks: dict) -> None:
    """Stopped after epoch 0, checkpoint by rank 0, resumed on both ranks: the plans of
    epochs 1 and 2 are those of the run without a break."""
    for rank in ranks["rank"]:
        for epoch in (1, 2):
            np.testing.assert_array_equal(rank["resumed"][epoch - 1], rank[f"plan{epoch}"])


@pytest.mark.parametrize("count", [0, 1, 5, 6, 7])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shard_splits_like_distributed_sampler(count: int, size: int, drop_last: bool) -> None:
    """Equal shares; disjoint apart from padding; together the whole plan (padded) or all but
    fewer than ``size`` of it (drop_last)."""
    indices = np.arange(100, 100 + count)
    shares = [shard(indices, size, rank, drop_last) for rank in range(size)]
    length = shard_length(count, size, drop_last)
    assert all(len(share) == length for share in shares)
    union = np.concatenate(shares)
    if drop_last:
        assert len(np.unique(union)) == len(union) and count - len(union) < size
    else:
        assert set(union.tolist()) == set(indices.tolist())
        assert len(union) - count == (-count) % size if count else len(union) == 0
