"""Every node run's life in MLflow, owned by the driver: workers only add metric points.

Before a tree run's slots start, the driver opens the MLflow run of each node it will train
(parents first, nested under the study's run) and marks it SCHEDULED; the workers get the run ids
in their specs and stream metric points to them (raysweep.tracking.points.MLflowPoints), nothing more.
The queue's events (raysweep.sweep.queue), read by the driver's progress thread, move the runs on:

    start  -> RUNNING (the item's nodes that are not settled)
    retry  -> SCHEDULED again (its progress checkpoint is kept; the next attempt resumes it)
    done, diverged, failed, blocked
           -> each settled node synced from its node folder (FINISHED, or FAILED "diverged");
              each unsettled one closed FAILED with the reason ("failed", "blocked")

Once the slots have stopped, a run still open (its item never taken: every slot failed) is closed
as "not trained", so a study leaves nothing RUNNING or SCHEDULED, whatever its workers died of.
"""

from __future__ import annotations

from raysweep.spec import Node
from raysweep.store.nodes import node_settled
from raysweep.sweep.queue import Item
from raysweep.sweep.sync import close_run, open_run, sync_node
from raysweep.sweep.work import Work

OPEN = ("SCHEDULED", "RUNNING")


class TreeRuns:
    """The MLflow runs of one tree run's nodes (node key -> run id), and their states as the driver set them."""

    def __init__(self, tracker, study_run: str | None):
        self.tracker, self.study_run = tracker, study_run
        self.work: Work | None = None  # the tree run's items and nodes, as its slots get them (open)
        self.memo: dict[str, str | None] = {}  # node key -> run id, parents included
        self.state: dict[str, str] = {}  # node key -> the status the driver last gave the run it opened

    @property
    def online(self) -> bool:
        return self.tracker is not None and self.tracker.online and self.study_run is not None

    def open(self, work: Work, items: list[Item], settled: set[str]) -> dict[str, str]:
        """Open (or find) the run of every node of `items` not in `settled`, SCHEDULED; returns
        node key -> run id for the workers. Empty offline: the driver's sync writes them later."""
        self.work = work
        if not self.online:
            return {}
        for item in items:
            for node in self.work.group(item):
                key = node.spec.node_key
                if key not in settled and key not in self.state and self.run_of(node) is not None:
                    self.set(key, "SCHEDULED")
        return {key: self.memo[key] for key in self.state}

    def run_of(self, node: Node) -> str | None:
        key = node.spec.node_key
        if key not in self.memo:
            self.memo[key] = open_run(self.tracker, node, self.parent_run(node))
        return self.memo[key]

    def parent_run(self, node: Node) -> str | None:
        return self.study_run if node.parent is None else self.run_of(self.work.by_key[node.parent])

    def set(self, key: str, status: str) -> None:
        if self.state.get(key) != status:
            self.tracker.guard(f"marking MLflow run {self.memo[key]} {status}", self.tracker.set_status, self.memo[key], status)
            self.state[key] = status

    def on_event(self, what: str, item: Item, text: str) -> None:
        """One queue event (module docstring)."""
        nodes = [n for n in self.work.group(item) if self.state.get(n.spec.node_key) in OPEN]
        if what in ("start", "retry"):
            for n in nodes:
                self.set(n.spec.node_key, "RUNNING" if what == "start" else "SCHEDULED")
            return
        # a node left unsettled by an item that ended "done" sits below its diverged stage-2 run;
        # a "failed" event whose text says "blocked" is an item whose arm or stage-2 run failed
        reason = "blocked" if what in ("done", "blocked") or text.startswith("blocked") else "failed"
        for n in nodes:
            self.settle(n, reason)

    def settle(self, node: Node, reason: str) -> None:
        """A node whose item ended: synced when settled (finished or diverged), else closed with `reason`."""
        key = node.spec.node_key
        if node_settled(node.spec.node_dir):
            sync_node(self.tracker, node, self.parent_run(node), run_id=self.memo[key])
        else:
            close_run(self.tracker, self.memo[key], reason)
        self.state[key] = "closed"

    def close_rest(self) -> None:
        """Once the slots have stopped: every run still open is settled (its item never ended)."""
        for key, status in list(self.state.items()):
            if status in OPEN:
                self.settle(self.work.by_key[key], "not trained")
