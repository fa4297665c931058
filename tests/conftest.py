import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no machine here reaches a hub: fail fast, not after a timeout


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (see pyproject.toml) are skipped, with the reason, where no CUDA GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA GPU (python tools/gpu_suite.py runs them on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def isolated_dirs(tmp_path_factory):
    """Build models into a fresh cache and write results into a scratch folder, never the repo's."""
    os.environ["WORKBOOK_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WORKBOOK_RESULTS"] = str(tmp_path_factory.mktemp("results"))
    os.environ.pop("WORKBOOK_PROFILE", None)
    yield


@pytest.fixture(scope="session")
def tiny():
    """The tiny Llama in fp32 with SDPA, loaded once for the tests that only read it."""
    from helpers import models

    return models.load("llama-2-7b-tiny", dtype="fp32", attention="sdpa")
