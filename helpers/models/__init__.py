"""Models and loading: the catalog of real architectures, the trained model, checkpoints built once with random
weights, what a model is asked to be, and ``load`` with its verification.

- ``architectures``: the published configurations of the catalog's architectures, their dimensions.
- ``catalog``: real architectures by name, with their configs and tiny CPU-sized twins.
- ``trained``: the one trained decoder, SmolLM2-135M-Instruct, converted once from a packaged GGUF file.
- ``checkpoints``: catalog models built once with random weights; where every model is read from.
- ``request``: what a model is asked to be (dtype, attention, weights, bitsandbytes options), refused at the door
  when this machine or architecture cannot run it.
- ``verification``: what was asked for against what is in effect after loading.
- ``loading``: ``load`` any model with any attention path and weight format, verified; ``unload``.
"""

from . import architectures, catalog, checkpoints, loading, request, trained, verification
from .loading import Loaded, OneAtATime, load, unload
from .request import Request, bnb_config
from .verification import Verification, quantized_layers, verify

__all__ = [
    "architectures",
    "catalog",
    "checkpoints",
    "loading",
    "request",
    "trained",
    "verification",
    "Loaded",
    "OneAtATime",
    "load",
    "unload",
    "Request",
    "bnb_config",
    "Verification",
    "quantized_layers",
    "verify",
]
