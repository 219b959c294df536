"""Neural network backbones; importing this package registers every architecture."""
from .registry import build_model, count_parameters, architectures, register_architecture  # noqa: F401
import importlib as _importlib

for _mod in ("unet", "ncsnpp", "convtasnet", "locoformer"):
    try:
        _importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _e:  # a backbone module not written yet
        if _e.name != f"{__name__}.{_mod}":
            raise
