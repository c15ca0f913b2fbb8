"""Joining Ray: the one place scenefit imports Ray and starts or joins a cluster.

    scenefit predict --manifest M --out preds.parquet --engine ray --address auto
    scenefit annotate M --db DB --config paper      # teachers with backend ray_http / ray_vllm

    from scenefit.core.ray_session import join_ray
    ray = join_ray(address=None)          # a local Ray on this machine, or the one already joined

Ray is the optional ``ray`` extra (``ray[data]`` and aiohttp for Ray Data's HTTP processor); it is
imported only here, when a Ray engine runs, and a missing extra is an :class:`MissingRayExtra`
naming it. Ray Data's own progress bars are turned off: scenefit shows one bar on stderr.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from scenefit.core.errors import ScenefitError

#: How to get Ray, said in every "missing" message.
RAY_EXTRA_HINT = "pip install 'scenefit[ray]'  (the `ray` extra: ray[data] and aiohttp)"


class MissingRayExtra(ScenefitError, ImportError):
    """Ray (or a part of Ray Data this feature needs) is not installed."""


def import_ray(feature: str) -> Any:
    """``ray`` with ``ray.data`` loaded; raises :class:`MissingRayExtra` naming ``feature`` and the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingRayExtra(f"{feature} needs Ray Data, which is not installed ({e}): {RAY_EXTRA_HINT}") from None
    return ray


def import_ray_llm(feature: str) -> Any:
    """``ray.data.llm`` (the LLM processors); raises :class:`MissingRayExtra` naming ``feature`` and the extra."""
    import_ray(feature)
    try:
        import ray.data.llm as llm
    except ImportError as e:
        raise MissingRayExtra(f"{feature} needs Ray Data's LLM processors, which cannot be imported ({e}): "
                              f"{RAY_EXTRA_HINT}") from None
    return llm


def join_ray(address: Optional[str] = None, feature: str = "the Ray engine", num_cpus: Optional[int] = None) -> Any:
    """Ray, initialised: the session this process already joined, else ``address`` (a running
    cluster: the address `ray start --head` printed, or ``auto``), else a new local Ray
    (``num_cpus`` of this machine; all when None). Quiet: no dashboard, no Ray progress bars."""
    ray = import_ray(feature)
    if not ray.is_initialized():
        # Workers' own output stays in Ray's session logs: stderr keeps scenefit's progress bar, and
        # a worker's exception still reaches this process with its traceback.
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        elif num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray
