"""Language models are a target feature (issue #18): the driver asks the backend's
``language_model`` (:mod:`nmc.lm.target`) and the graph's kind (:mod:`nmc.driver.model_kinds`),
never the target's name."""
import pytest

from nmc.backends import get_backend
from nmc.backends.spinnaker2.lm import S2LanguageModels
from nmc.driver.model_kinds import NETWORK, LanguageModel, model_kind
from nmc.errors import OptionError
from nmc.ir import Graph
from nmc.lm.target import GENERIC, LanguageModelTarget, language_model


class _PlainBackend:
    """A backend with no language-model feature of its own."""

    def default_pipeline(self, options):
        return "normalize,partition"


class _LMBackend(_PlainBackend):
    """A backend declaring its own language-model pipeline and engines."""

    class _Feature(LanguageModelTarget):
        engines = ("fast", "reference")

        def default_pipeline(self, backend, options):
            return "normalize,sparsify{density=0.5}"

    language_model = _Feature()


def test_each_backend_declares_what_it_does_for_language_models():
    s2 = language_model(get_backend("spinnaker2"))
    assert isinstance(s2, S2LanguageModels) and s2.engines[0] == "emulator" and "c" in s2.engines
    for t in ("reference", "loihi2", "brainscales2"):
        assert language_model(get_backend(t)) is GENERIC
    assert GENERIC.engines == ("reference",)


def test_the_pipeline_of_a_language_model_comes_from_its_target():
    lm = LanguageModel()
    assert lm.default_pipeline(_LMBackend(), {}) == "normalize,sparsify{density=0.5}"
    assert lm.default_pipeline(_PlainBackend(), {}) == "normalize,partition"  # no feature: the target's own
    assert NETWORK.default_pipeline(_LMBackend(), {}) == "normalize,partition"  # not a language model
    s2 = get_backend("spinnaker2")
    assert lm.default_pipeline(s2, {"density": 0.1, "egru_weights": "float32"}) == \
        "normalize,sparsify{density=0.1,scope=layer,nodes=EGRU,format=csr},partition,place,route"
    assert lm.default_pipeline(s2, {}) == \
        "normalize,sparsify{density=0.05,scope=layer,nodes=EGRU,format=csr},quantize{bits=8},partition,place,route"
    with pytest.raises(OptionError, match="density"):
        lm.default_pipeline(s2, {"density": 1.5})


def test_the_kind_of_a_model_is_read_from_its_graph(tmp_path):
    assert model_kind(Graph(meta={"dt": 1e-3})) is NETWORK
    assert isinstance(model_kind(Graph(meta={"dt": 1e-3, "lm": {"vocab": 3}})), LanguageModel)
    with pytest.raises(OptionError, match="language models"):
        NETWORK.text_calibration(Graph(), tmp_path / "c.txt")


def test_an_engine_the_target_lacks_is_refused_naming_its_engines():
    class B:
        target = "loihi2"

    with pytest.raises(OptionError, match="engine 'c' is not available for target 'loihi2'") as e:
        GENERIC.engine("c", B())
    assert "reference" in e.value.hint
    with pytest.raises(OptionError, match="engines for loihi2"):
        _LMBackend.language_model.engine("emulator", B())
