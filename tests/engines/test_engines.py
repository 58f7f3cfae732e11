"""LESS and loss under DeepSpeed ZeRO-2/3 and FSDP2 select exactly what DDP selects.

Two gloo processes on the CPU train the same LoRA tiny Llama one AdamW step on the
same global batch under each engine, then score the pool with ``less`` (a random
projection and the exact identity one) and ``loss``. The reference is one process
that averages the two ranks' half-batch gradients, i.e. DDP. Under ZeRO-3 every
parameter is partitioned (persistence threshold 0), and 9 candidates in batches of 2
give the ranks 3 and 2 batches, so the collective forwards need padding; a 1-candidate
round leaves rank 1 with nothing to score at all.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch.multiprocessing as mp

from tests.engines import engine_worker as w

HAS_DS = importlib.util.find_spec("deepspeed") is not None
ENGINES = [*(["zero2", "zero3"] if HAS_DS else []), "fsdp2"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    mp.spawn(w.worker, args=(2, ENGINES, str(out / "init"), str(out)), nprocs=2, join=True)
    ran = {e: [json.loads((out / f"{e}-{r}.json").read_text()) for r in range(2)] for e in ENGINES}
    return w.run("reference", 0, 1), ran


def _check(reference: dict, runs: list[dict], engine: str) -> None:
    for rank, res in enumerate(runs):
        where = f"{engine} rank {rank}"
        assert res["trainable"] == reference["trainable"] == 1664, where  # full shapes, not shards
        for name in [*w.SPECS, *w.ONE]:
            assert res[name]["indices"] == reference[name]["indices"], (where, name)
            assert res[name]["scores"] == pytest.approx(reference[name]["scores"], rel=1e-4, abs=1e-8), (
                where,
                name,
            )
            assert res[name]["transform"] == reference[name]["transform"], (where, name)
        assert res["hparams"] == [[0.9, 0.99, 1e-6]], where
        assert res["adam"].keys() == reference["adam"].keys(), where
        for n, (m, v) in reference["adam"].items():
            assert res["adam"][n][0] == pytest.approx(m, rel=1e-5, abs=1e-9), (where, n)
            assert res["adam"][n][1] == pytest.approx(v, rel=1e-5, abs=1e-12), (where, n)
        assert res["grads_written"] == [], where
        for n, values in reference["after_step_2"].items():
            assert res["after_step_2"][n] == pytest.approx(values, rel=1e-5, abs=1e-6), (where, n)


@pytest.mark.skipif(not HAS_DS, reason="deepspeed is not installed: pip install 'dataflex[deepspeed]'")
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_deepspeed_selects_like_ddp(results, engine):
    reference, ran = results
    assert {r["engine"] for r in ran[engine]} == {"zero1/2" if engine == "zero2" else "zero3"}
    _check(reference, ran[engine], engine)


def test_fsdp2_selects_like_ddp(results):
    reference, ran = results
    assert {r["engine"] for r in ran["fsdp2"]} == {"fsdp2"}
    _check(reference, ran["fsdp2"], "fsdp2")


def test_the_reference_uses_adam_and_every_spec_selects(results):
    # guards the comparison above from comparing two empty or sgd-only rounds
    ref = results[0]
    assert ref["less"]["transform"] == "adam" and len(ref["less"]["indices"]) == w.BUDGET
    assert len(ref["loss_one"]["indices"]) == 1 and len(ref["adam"]) == 12
