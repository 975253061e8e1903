"""Orbax checkpointing of whole run state: any pytree of arrays plus a JSON sidecar of host state.

Every process runs the save/restore collectives; orbax writes each array shard from the process that
owns it. Restoring takes an abstract target (shapes, dtypes, shardings: `jax.ShapeDtypeStruct`s or live
arrays) so arrays come back sharded, straight into their devices: a trainer restores into an abstract
state and never builds a second full copy. Only finalized checkpoints are listed, so the latest step is
always a complete one (a save cut short by a crash leaves a temporary directory orbax ignores).
`restore_host` reads the JSON sidecar alone (cheap), e.g. to check a checkpoint fits the run before
touching any array.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) mirroring a tree of arrays: the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints of `(state pytree, host-side JSON)` under `directory`."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, save_every: int = 1, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                save_interval_steps=save_every,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, host_state: dict | None = None, *, force: bool = False) -> bool:
        """Saves if `step` is due (or `force`); returns whether a save started."""
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host_state or {})
            ),
            force=force,
        )
        if saved:
            log.info("checkpoint: saving step %d to %s", step, self.directory)
        return saved

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict, int] | None:
        """Restores `(state, host_state, step)` (latest by default) into `target`'s shapes/shardings."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_like(target)), host=ocp.args.JsonRestore()
            ),
        )
        log.info("checkpoint: restored step %d from %s", step, self.directory)
        return restored["state"], dict(restored["host"] or {}), step

    def restore_host(self, step: int | None = None) -> dict | None:
        """The JSON sidecar of checkpoint `step` (latest by default), without reading any array."""
        step = self._manager.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))
        return dict(restored["host"] or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
