"""The path users follow: write a selector, register it, reference it from YAML, run it."""

import pytest

from dataflex.configs import load_components
from dataflex.errors import ConfigError
from dataflex.registry import SELECTORS, list_selectors, register_selector
from dataflex.selectors import Selection, SelectionContext, Selector, SelectorParams


@pytest.fixture
def shortest_first():
    @register_selector("test_shortest_first")
    class ShortestFirst(Selector):
        """Prefer the shortest examples."""

        class Params(SelectorParams):
            reverse: bool = False

        def select(self, ctx: SelectionContext, num_samples: int) -> Selection:
            self.check_budget(len(ctx.train_dataset), num_samples)
            lengths = [len(ex["input_ids"]) for ex in ctx.train_dataset]
            order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i), reverse=self.params.reverse)
            chosen = order[:num_samples]
            return Selection(chosen, scores=[-lengths[i] for i in chosen], metadata={"rule": "length"})

    yield ShortestFirst
    SELECTORS.unregister("test_shortest_first")


def test_registered_selector_runs_from_yaml(tmp_path, shortest_first, examples):
    cfg = tmp_path / "components.yaml"
    cfg.write_text("selectors:\n  short:\n    name: test_shortest_first\n    params:\n      reverse: false\n")
    assert "test_shortest_first" in list_selectors("test_*")
    selector = load_components(cfg).build_selector("short")
    assert isinstance(selector, shortest_first)

    data = examples(10)
    selection = selector.select(SelectionContext(model=None, optimizer=None, train_dataset=data), 3)
    lengths = sorted(len(ex["input_ids"]) for ex in data)
    assert [len(data[i]["input_ids"]) for i in selection.indices] == lengths[:3]
    assert selection.metadata == {"rule": "length"}


def test_registered_selector_params_are_strict(tmp_path, shortest_first):
    cfg = tmp_path / "components.yaml"
    cfg.write_text("selectors:\n  short:\n    name: test_shortest_first\n    params: {revers: true}\n")
    with pytest.raises(
        ConfigError, match=r"selectors\.short\.params\.revers: unknown key 'revers'\. Did you mean 'reverse'"
    ):
        load_components(cfg)


def test_selection_validates_scores_length():
    with pytest.raises(ValueError, match="2 indices but 1 scores"):
        Selection([1, 2], scores=[0.5])


def test_default_state_dict_round_trip_and_rejects_foreign_state(shortest_first):
    sel = shortest_first()
    sel.load_state_dict(sel.state_dict())
    with pytest.raises(ValueError, match="keeps no state"):
        sel.load_state_dict({"scores": [1.0]})


def test_params_and_kwargs_are_exclusive(shortest_first):
    with pytest.raises(TypeError, match="either a Params instance or keyword params"):
        shortest_first(shortest_first.Params(), reverse=True)
