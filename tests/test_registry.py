import pytest

from dataflex.errors import RegistryError, closest_names
from dataflex.projectors import Projector
from dataflex.registry import SELECTORS, Registry, list_selectors
from dataflex.selectors import RandomSelector, Selector


class Base:
    """Base."""


def make_registry() -> Registry:
    return Registry("widget", base=Base)


def test_register_and_lookup():
    reg = make_registry()

    @reg.register("alpha")
    class Alpha(Base):
        """Alpha widget. More text."""

    assert reg.get("alpha") is Alpha
    assert Alpha.registry_name == "alpha"
    assert "alpha" in reg
    assert reg.summary("alpha") == "Alpha widget. More text."


def test_duplicate_name_raises_and_keeps_first():
    reg = make_registry()

    @reg.register("alpha")
    class Alpha(Base):
        pass

    with pytest.raises(RegistryError, match=r"widget 'alpha' is already registered by .*Alpha"):

        @reg.register("alpha")
        class Other(Base):
            pass

    assert reg.get("alpha") is Alpha


def test_reregistering_the_same_class_is_idempotent():
    reg = make_registry()

    class Alpha(Base):
        pass

    reg.register("alpha")(Alpha)
    reg.register("alpha")(Alpha)
    assert reg.names() == ["alpha"]


def test_wrong_base_is_rejected():
    reg = make_registry()
    with pytest.raises(RegistryError, match="must subclass .*Base"):
        reg.register("x")(int)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_names_rejected(bad):
    with pytest.raises(RegistryError, match="non-empty string"):
        make_registry().register(bad)


def test_unknown_name_suggests_closest():
    reg = make_registry()
    for name in ["less", "loss", "random"]:
        reg.register(name)(type(name, (Base,), {}))
    with pytest.raises(RegistryError, match=r"Unknown widget 'lesss'\. Did you mean 'less'"):
        reg.get("lesss")
    with pytest.raises(RegistryError, match=r"Valid choices: less, loss, random\."):
        reg.get("zzzzzz")


def test_list_with_glob():
    reg = make_registry()
    for name in ["less", "loss", "random"]:
        reg.register(name)(type(name, (Base,), {}))
    assert reg.names() == ["less", "loss", "random"]
    assert reg.names("l*") == ["less", "loss"]
    assert reg.names("*o*") == ["loss", "random"]
    assert reg.names("nothing*") == []


def test_unregister():
    reg = make_registry()
    reg.register("a")(type("A", (Base,), {}))
    reg.unregister("a")
    assert "a" not in reg
    with pytest.raises(RegistryError):
        reg.unregister("a")


def test_closest_names_is_case_insensitive():
    assert closest_names("LESS", ["less", "loss"]) == ["less", "loss"]


def test_builtin_selectors_registered_on_lookup():
    assert "random" in list_selectors()
    assert SELECTORS.get("random") is RandomSelector
    assert SELECTORS.base is Selector


def test_projector_registry_requires_projector_subclass():
    from dataflex.registry import PROJECTORS

    assert PROJECTORS.base is Projector
    with pytest.raises(RegistryError, match="must subclass dataflex.projectors.base.Projector"):
        PROJECTORS.register("not_a_projector")(Base)


def test_value_entries_are_checked_by_isinstance_and_equal_values_are_idempotent():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Widget(Base):
        size: int
        description: str = ""

    reg = Registry("widget", base=Base)
    small = reg.add("small", Widget(1, "a small widget"))
    assert reg.get("small") is small
    assert not hasattr(small, "registry_name")  # only classes learn their name
    assert reg.summary("small") == "a small widget"
    reg.add("small", Widget(1, "a small widget"))  # an equal value again: no-op
    with pytest.raises(RegistryError, match=r"widget 'small' is already registered by .*Widget"):
        reg.add("small", Widget(2))
    assert reg.get("small").size == 1
    reg.add("small", Widget(2), overwrite=True)
    assert reg.get("small").size == 2
    with pytest.raises(RegistryError, match="must be an instance of .*Base"):
        reg.add("bad", 3)


def test_builtin_templates_live_on_the_registry():
    from dataflex.data.templates import Template, get_template, list_templates, register_template
    from dataflex.errors import ConfigError
    from dataflex.registry import TEMPLATES

    assert TEMPLATES.base is Template
    assert {"llama3", "chatml", "qwen", "mistral", "alpaca", "empty", "default"} <= set(TEMPLATES.names())
    assert list_templates() == ["tokenizer", *TEMPLATES.names()]
    assert get_template("chatml") is TEMPLATES.get("chatml")
    mine = Template(name="registry_test_chat", user="{content}", assistant="{content}")
    TEMPLATES.add(mine.name, mine)  # registered the way a selector is: get_template sees it
    try:
        assert get_template("registry_test_chat") is mine
        with pytest.raises(RegistryError, match="already registered"):
            register_template(Template(name="registry_test_chat", user="x{content}", assistant="{content}"))
    finally:
        TEMPLATES.unregister("registry_test_chat")
    with pytest.raises(ConfigError, match="unknown template 'registry_test_chat'"):
        get_template("registry_test_chat")
    with pytest.raises(ConfigError, match="reserved for the tokenizer's own chat template"):
        register_template(Template(name="tokenizer", user="{content}", assistant="{content}"))
