"""Shared test setup: hypothesis profiles and the backend every test runs on.

Profiles (pick one with ``pytest --hypothesis-profile=NAME``):
  ci        few examples, derandomized: fast and repeatable, used by .ci/run
  dev       the default for local runs
  thorough  many examples, for a long local run before a release
"""
import os

# One BLAS thread: the tests' matrices are tiny, and on a busy 2-core machine competing
# BLAS threads make each matmul many times slower. Set before NumPy is first imported.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import minitransformer as mt  # noqa: E402

settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dev")


@pytest.fixture(params=["numpy", "cupy"], autouse=True, scope="session")
def backend(request):
    """Every test runs once per backend; the CuPy run is skipped without a GPU."""
    if request.param == "cupy" and not mt.gpu_available():
        pytest.skip("CuPy with a CUDA GPU is not available")
    mt.set_backend(request.param)
    yield request.param
    mt.set_backend("numpy")
