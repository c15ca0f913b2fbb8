"""How many processes the training runs in, and how many the user asked the launcher for.

    from scenefit.train.launch import world_size, single_process_warning

``torchrun --nproc_per_node N`` and ``accelerate launch`` with a multi-process config set
``WORLD_SIZE``/``RANK`` in each process. ``accelerate launch --cpu --num_processes N`` does not:
it starts one process (accelerate needs its multi-CPU setup for more), so the run would silently
train alone. The launcher's own command line (the parent process) still says what was asked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

#: Launcher flags that ask for a number of processes (accelerate and torchrun spellings).
_PROCESS_FLAGS = re.compile(r"^--(?:num[_-]processes|nproc[_-]per[_-]node)(?:=(\d+))?$")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def parent_command_line() -> list[str]:
    """The parent process's argv (Linux /proc); empty where it cannot be read."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def requested_processes(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    """The process count a launcher command line asks for (``--num_processes 2``,
    ``--nproc_per_node=2`` …), or None when it names none."""
    argv = list(parent_command_line() if argv is None else argv)
    for i, arg in enumerate(argv):
        m = _PROCESS_FLAGS.match(arg)
        if not m:
            continue
        value = m.group(1) or (argv[i + 1] if i + 1 < len(argv) else "")
        if value.isdigit():
            return int(value)
    return None


def single_process_warning(world: Optional[int] = None, argv: Optional[Sequence[str]] = None) -> Optional[str]:
    """A warning when the launcher was asked for more than one process but this run has one."""
    world = world_size() if world is None else world
    asked = requested_processes(argv)
    if world != 1 or not asked or asked <= 1:
        return None
    hint = ""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"):
        hint = " (`accelerate launch --cpu` starts one process)"
    return (
        f"the launcher was asked for {asked} processes but this run has world size 1{hint}; training goes on "
        f"in ONE process. On CPU use `torchrun --nproc_per_node {asked} \"$(command -v scenefit)\" train …`."
    )


#: accelerate's environment flags for the sharded strategies, and the distributed type each gives.
_SHARDING_FLAGS = (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED"))


def sharding_fallback_warning(distributed_type) -> Optional[str]:
    """A warning when the launcher asked for FSDP or DeepSpeed and accelerate set up something
    else: accelerate 1.15 turns them on only for accelerator devices, so on CPU an FSDP config
    silently runs plain DDP (every process holds the whole model)."""
    running = str(getattr(distributed_type, "value", distributed_type))
    for env, name in _SHARDING_FLAGS:
        if os.environ.get(env, "").lower() == "true" and running != name:
            return (
                f"the launcher asked for {name} but accelerate runs {running} here ({name} is enabled only on "
                "accelerator devices, not on CPU): the model is replicated in every process, not sharded."
            )
    return None
