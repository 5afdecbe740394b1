"""Shared test setup: hypothesis profiles and the backend every test runs on.

Profiles (pick one with ``pytest --hypothesis-profile=NAME``):
  ci        few examples, derandomized: fast and repeatable, used by .ci/run
  mutation  ci without shrinking a failure (benchmarks/mutation_score.py)
  dev       the default for local runs
  thorough  many examples, for a long local run before a release
"""
import os
import pathlib

# One BLAS thread: the tests' matrices are tiny, and on a busy 2-core machine competing
# BLAS threads make each matmul many times slower. Set before NumPy is first imported.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

import minitransformer as mt  # noqa: E402

settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# ci without shrinking, for benchmarks/mutation_score.py: the same examples, so the same
# verdict, but a caught bug is not then minimised (which can take a minute per bug).
settings.register_profile("mutation", settings.get_profile("ci"),
                          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])
settings.load_profile("dev")


TESTS = pathlib.Path(__file__).parent


def _use_cupy_module(name):
    """Make ``backend`` import ``name`` as CuPy from now on (None: the real ``cupy``),
    in this process and in the subprocesses that tests start."""
    if name is None:
        os.environ.pop("MINITRANSFORMER_CUPY_MODULE", None)
    else:
        os.environ["MINITRANSFORMER_CUPY_MODULE"] = name
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if str(TESTS) not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS)] + [p for p in paths if p])
    mt.backend._cupy = None  # forget the module loaded so far, and its generator
    mt.backend._generators.pop("gpu", None)


# backend name for mt.set_backend, module to import as cupy (None: the real one)
_BACKENDS = {"numpy": ("numpy", None), "cupy-standin": ("cupy", "strict_cupy"),
             "cupy": ("cupy", None)}


@pytest.fixture(params=list(_BACKENDS), autouse=True, scope="session")
def backend(request):
    """Every test runs on NumPy, on the strict CuPy stand-in (tests/strict_cupy.py) and,
    when a GPU is there, on real CuPy. The fixture's value is the backend name, "numpy"
    or "cupy", whichever CuPy it is."""
    name, cupy_module = _BACKENDS[request.param]
    _use_cupy_module(cupy_module)
    if name == "cupy" and not mt.gpu_available():
        pytest.skip("CuPy with a CUDA GPU is not available")
    mt.set_backend(name)
    yield name
    mt.set_backend("numpy")
    _use_cupy_module(None)


@pytest.fixture(autouse=True)
def _backend_for_each_test(backend):
    """Select the session's backend again before every test: a demo's main() switches to
    its --backend (NumPy by default) and would otherwise leave the rest of the session
    on NumPy."""
    mt.set_backend(backend)
