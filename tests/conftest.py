"""Shared pytest set-up: the gpu marker skips cleanly without CUDA; seeds are fresh per test
(printed on failure) so that inputs are new random draws each run yet reproducible."""
import os
import random

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """A new seed per test (ATTNFAST_TEST_SEED fixes it); reported when the test fails."""
    seed = int(os.environ.get("ATTNFAST_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    random.seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield seed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            report.sections.append(("seed", f"ATTNFAST_TEST_SEED={seeds[0]} reproduces this run"))
