"""The mixin on TRL's SFTTrainer with pre-tokenised data (skipped without TRL)."""

from __future__ import annotations

import pytest

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from dyn_helpers import ProbeSelector, make_pool, probe_indices, tiny_llama  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from dataflex.data.collator import SFTDataCollator  # noqa: E402
from dataflex.registry import build_selector  # noqa: E402
from dataflex.train.dynamic import DynamicSelectionMixin, SelectionSchedule, warmup_indices  # noqa: E402


class DynamicSFTTrainer(DynamicSelectionMixin, trl.SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        idx = inputs.pop("idx")
        self.seen.extend((self.state.global_step, int(i)) for i in idx.tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class IdxCollator(SFTDataCollator):
    def __call__(self, examples):
        import torch

        batch = super().__call__(examples)
        batch["idx"] = torch.tensor([e["idx"] for e in examples])
        return batch


def word_tokenizer():
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(64)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t3"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t2", bos_token="t1")


@pytest.mark.parametrize("skip_prepare", [True, False], ids=["skip_prepare_dataset", "prepared"])
def test_sft_trainer_trains_each_round_on_its_selection(tmp_path, skip_prepare):
    ProbeSelector.calls.clear()
    pool = datasets.Dataset.from_list(make_pool(20))
    schedule = SelectionSchedule(2, 2, 2)
    config = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        seed=3,
        save_strategy="no",
        remove_unused_columns=False,
        disable_tqdm=True,
        dataset_kwargs={"skip_prepare_dataset": skip_prepare},
        max_length=None,
    )
    trainer = DynamicSFTTrainer(
        model=tiny_llama(),
        args=config,
        train_dataset=pool,
        processing_class=word_tokenizer(),
        data_collator=IdxCollator(pad_token_id=0),
        selector=build_selector("test_probe"),
        schedule=schedule,
        plots=False,
    )
    trainer.train()
    assert [c["adam_steps"] for c in ProbeSelector.calls] == schedule.selection_steps
    expected = {0: warmup_indices(20, 4, 3), 1: probe_indices(20, 4, 2), 2: probe_indices(20, 4, 4)}
    for r in schedule.rounds:
        start = schedule.start_step(r)
        assert [i for s, i in trainer.seen if start <= s < start + schedule.num_steps(r)] == expected[r]


def test_packing_is_refused(tmp_path):
    from dataflex.errors import ConfigError
    from dataflex.train.dynamic import check_training_args

    config = trl.SFTConfig(output_dir=str(tmp_path), packing=True, max_length=64, report_to=[], use_cpu=True)
    with pytest.raises(ConfigError, match="packing=True .* Set packing=False"):
        check_training_args(config, SelectionSchedule(1, 1, 1))
