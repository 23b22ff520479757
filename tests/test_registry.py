"""One registry helper behind every pluggable family: the same errors for unknown and duplicate names."""
import pytest

from neuroal_jax.models import FAMILIES
from neuroal_jax.outputs.plots import PLOTS
from neuroal_jax.pruning import SCORES
from neuroal_jax.registry import Registry
from neuroal_jax.topups import TOPUPS
from neuroal_jax.topups.neuroal import METRICS, OUTPUT_METRICS

ALL = {"model family": (FAMILIES, "llama"), "score": (SCORES, "wanda"), "top-up": (TOPUPS, "neuroal"),
       "alignment metric": (METRICS, "neuron"), "output metric": (OUTPUT_METRICS, "output_kl"),
       "plot": (PLOTS, "block_sparsity")}


@pytest.mark.parametrize("kind", list(ALL))
def test_every_registry_behaves_the_same(kind):
    registry, known = ALL[kind]
    assert isinstance(registry, Registry) and registry.kind == kind and known in registry
    with pytest.raises(ValueError, match=f"unknown {kind} 'nope'; valid: .*{known}"):
        registry["nope"]
    with pytest.raises(ValueError, match=f"{kind} '{known}' is already registered"):
        registry.register(known, registry[known])
    assert registry.register(known, registry[known], override=True) is registry[known]


def test_decorator_and_order():
    r = Registry("thing")

    @r.register("b")
    def b():
        return 2

    r.register("a", lambda: 1)
    assert list(r) == ["b", "a"] and r.names() == ("b", "a") and len(r) == 2 and r["b"] is b
    with pytest.raises(ValueError, match="non-empty string"):
        r.register("", b)


def test_the_package_names_are_never_shadowed_by_a_submodule():
    """`nj.compare` stays the function after its module is imported (a submodule of the same name would replace
    the lazily loaded attribute)."""
    import importlib
    import types

    import neuroal_jax as nj
    for name, module in nj._API.items():
        importlib.import_module(f"neuroal_jax.{module}")
        assert not isinstance(getattr(nj, name), types.ModuleType), name
