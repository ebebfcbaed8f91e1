import os

# Anything that tries a model hub must fail at once, never download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402

torch.set_num_threads(2)


import pytest  # noqa: E402


@pytest.fixture
def onnx_cannot_pass(monkeypatch):
    """The onnx target held to a cosine above 1, so its export fails parity: what the
    tests of a parity failure's exit code, messages and evidence need. The fp32 own-rounding floors
    would lift floors no fp32 computation meets (parity.fp32_own_floors), so they are off here."""
    from edgeconv import parity, registrations
    from edgeconv.registry import TARGETS

    registrations.load()
    monkeypatch.setattr(TARGETS.get("onnx"), "tolerance", parity.Tolerance(vs_fp32_min_cosine=1.1))
    monkeypatch.setattr(parity, "fp32_own_floors", lambda tol, *args, **kwargs: (tol, ""))
