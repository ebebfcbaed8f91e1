import os

# Anything that tries a model hub must fail at once, never download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import torch  # noqa: E402

torch.set_num_threads(2)
