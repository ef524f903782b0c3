"""Make lm-eval 0.4.13 see our models and tasks.

lm-eval 0.4.13 has no plugin discovery (``--include_path`` registers tasks only), so ``register_models()`` puts lazy
``"module:Class"`` placeholders into lm-eval's model registry, after importing ``lm_eval.models``: ``get_model`` fills
the built-ins only into an empty registry, so registering ours first would make ``hf`` vanish. ``import olharness``
calls it, so a task YAML that imports our code registers ``ol`` before lm-eval builds the model."""
from __future__ import annotations

import os
from pathlib import Path

#: our model names -> lazy "module:Class" targets
MODELS = {
    "ol": "olharness.model:OLM",
    "hf-lsm": "olharness.lsm:HFLSM",
    "hf-mid": "olharness.longbench.hf_mid:HFMidLM",  # also registered by olharness.longbench.task
}


def _find_tasks_dir() -> Path:
    """``$OLH_TASKS_DIR``, else the repository's ``tasks/`` beside the package (editable install or
    checkout), else ``olharness/tasks`` (a copy shipped as package data)."""
    if os.environ.get("OLH_TASKS_DIR"):
        return Path(os.environ["OLH_TASKS_DIR"])
    here = Path(__file__).resolve().parent
    return next((d for d in (here.parent / "tasks", here / "tasks") if d.is_dir()), here.parent / "tasks")


TASKS_DIR = str(_find_tasks_dir())


def register_models() -> None:
    """Register ``ol``, ``hf-lsm`` and ``hf-mid`` with lm-eval, keeping the built-in models. Idempotent; a
    no-op when lm-eval is not installed."""
    try:
        import lm_eval.models  # noqa: F401  (fills the registry with the built-in models first)
        from lm_eval.api.registry import model_registry
    except ImportError:  # pragma: no cover - lm-eval is a dependency, but keep `import olharness` safe
        return
    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)
