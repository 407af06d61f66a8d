"""What an item of the warm slots' queue trains, inside a worker group.

("arm", i): pretraining arm i; ("subtree", j): stage-2 node j, then its stage-3 children from its
weights in memory; ("leaf", j, c): child c of stage-2 node j alone, from its stored weights. A
subtree's children are split off as leaves only at the tree's tail (`split_tail`), so the last
subtrees' stage-3 runs spread over the slots that would otherwise stand idle. Finished and diverged
nodes are skipped, so a retried item continues where its last attempt stopped. Every rank trains;
rank 0's runs stream metric points to the MLflow runs the driver opened for them
(raysweep.sweep.runs), and nothing else of MLflow happens here.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property

from raysweep.spec import Node, Subtree, all_nodes
from raysweep.store.leases import Lease, clear_tagged, ttl_s
from raysweep.store.nodes import failures_since, node_diverged, node_done, node_settled, record_failure
from raysweep.sweep.queue import Item


def split_tail(items: list[Item], todo: dict[int, list[int]], slots: int) -> tuple[list[Item], dict[int, set[int]]]:
    """The last `slots` subtrees to be taken keep their first child still to train; their others
    become leaf items at the end of the order, each waiting for its stage-2 run (`todo[j]`: subtree
    j's children still to train). Unsplit, the tree's tail is one slot per subtree training its
    stage-3 runs back to back while the other slots stand idle (bench/cluster_sim.py measured it).
    Returns the new order and, per split subtree, the children it no longer trains itself."""
    tail = [it for it in items if it[0] == "subtree" and len(todo.get(it[1], ())) > 1][-slots:] if slots > 0 else []
    split = {j: set(todo[j][1:]) for _, j in tail}
    return [*items, *(("leaf", j, c) for _, j in tail for c in sorted(split[j]))], split


@dataclass(frozen=True, eq=False)
class Work:
    """One tree run's items and what training them needs, made in the driver and sent, as it is, to
    every slot: the nodes, each item's streams (`with_sources`), the subtrees whose tail was split
    (`with_tail`), the MLflow run of each node to train (`with_runs`)."""

    arms: list[Node]
    subtrees: list[Subtree]
    runs: dict[str, str] = field(default_factory=dict)  # node key -> its MLflow run id, opened by the driver (raysweep.sweep.runs)
    split: dict[int, set[int]] = field(default_factory=dict)  # subtree -> its children trained as leaf items (split_tail)
    sources: dict[Item, dict] = field(default_factory=dict)  # item -> {dataset: StreamSource}: each rank reads its own rows
    lease_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this tree run's leases (raysweep.store.leases.clear_tagged)

    @cached_property
    def by_key(self) -> dict[str, Node]:
        return {m.spec.node_key: m for m in all_nodes(self.arms, self.subtrees)}

    def with_tail(self, split: dict[int, set[int]]) -> Work:
        """This work with subtrees' children split off as leaf items (split_tail)."""
        return replace(self, split=split)

    def clear_leases(self) -> int:
        """Delete the leases this run's workers left (a worker killed, or stopped with Ray, never releases its own)."""
        return clear_tagged([m.spec.node_dir for m in self.by_key.values()], self.lease_tag)

    def group(self, item: Item) -> list[Node]:
        kind, i = item[:2]
        if kind == "arm":
            return [self.arms[i]]
        n2, children = self.subtrees[i]
        if kind == "leaf":
            return [children[item[2]]]
        return [n2, *(c for k, c in enumerate(children) if k not in self.split.get(i, ()))]

    def todo(self, item: Item) -> list[Node]:
        """The item's nodes still to train, in training order (none below a diverged stage-2 node)."""
        group = self.group(item)
        if item[0] != "arm" and node_diverged(self.subtrees[item[1]][0].spec.node_dir):
            return []
        return [n for n in group if not node_settled(n.spec.node_dir)]

    def with_runs(self, runs: dict[str, str]) -> Work:
        """This work with the MLflow run each node's metric points go to."""
        return replace(self, runs=runs)

    def with_sources(self, items: list[Item], cache_root, mirror: str | None) -> Work:
        """This work with the stream each item's runs train on, as plan files: nothing proportional
        to a stream goes into the object store or the driver; each rank maps its own rows
        (raysweep.data.streams)."""
        from raysweep.data.streams import source_of

        sources = {}
        for item in items:
            head, *children = self.group(item)
            if item[0] == "leaf":  # a stage-3 run alone: it trains on D_ft
                sources[item] = {"ft": source_of(head.stream, cache_root, mirror)}
                continue
            sources[item] = {"train": source_of(head.stream, cache_root, mirror)}
            if children:
                sources[item]["ft"] = source_of(children[0].stream, cache_root, mirror)
        return replace(self, sources=sources)

    @contextmanager
    def claim(self, item: Item, rank: int, world: int, broadcast) -> Iterator[list]:
        """The item's runs still to train on this rank, in order (each with the MLflow run the
        driver opened for it, on rank 0), while rank 0 holds the item's lease (raysweep.store.leases:
        another study sharing the node store waits, then skips what it finished). `broadcast`
        shares rank 0's list with the others. The slot trains them itself (raysweep.sweep.slots):
        no layer between the queue and the chain."""
        lease = self.lease(item) if rank == 0 and self.todo(item) else None
        try:
            keys = broadcast([n.spec.node_key for n in self.todo(item)] if rank == 0 else None, world)
            yield [replace(self.by_key[k].spec, run_id=self.runs.get(k) if rank == 0 else None) for k in keys]
        finally:
            if lease is not None:
                lease.release()

    def lease(self, item: Item) -> Lease:
        """The item's lease (on its arm or stage-2 node), taken: waits while another trainer holds it."""
        head, waited_for = self.group(item)[0].spec, []

        def waiting(held: dict) -> None:
            waited_for.append(held)
            print(
                f"[{head.label}] waiting: another trainer holds it ({held.get('label', '?')} on {held.get('owner', '?')}); "
                f"it goes on once that one finishes or misses its heartbeat for {ttl_s():.0f} s",
                file=sys.__stdout__,
                flush=True,
            )

        lease = Lease(head.node_dir, head.label, self.lease_tag)
        waited = lease.acquire(waiting)
        if waited_for:
            print(f"[{head.label}] lease taken after {waited:.0f} s", file=sys.__stdout__, flush=True)
        return lease

    def outcome(self, item: Item) -> tuple[str, str]:
        """What the queue is told of a trained item, and its progress line's text."""
        head = self.group(item)[0]  # the arm, the stage-2 node or the leaf
        done = node_done(head.spec.node_dir)
        if done is None and item[0] == "leaf" and not node_diverged(head.spec.node_dir):
            return "done", "not trained: its stage-2 run diverged"
        if done is None:  # it diverged: an arm blocks its subtrees, a stage-2 node its children
            step = (node_diverged(head.spec.node_dir) or {}).get("step")
            return ("diverged" if item[0] == "arm" else "done"), f"{head.spec.stage} diverged at step {step}"
        losses = done["result"]["losses"]
        if item[0] == "arm":
            return "done", f"final_pre {losses['pre']:.3f}, final_post {losses['post']:.3f}"
        if item[0] == "leaf":
            return "done", f"L_ft {losses['ft']:.3f}, L_ret {losses['post']:.3f}"
        return "done", f"L_im {losses['post']:.3f}"

    def abandon(self, item: Item, since: float, error: str) -> None:
        """After a failed attempt that started at `since` (slot trial, outside the workers): the
        attempt is recorded in the failures file of the node it was training unless its worker
        recorded it (a worker killed by a signal or the OOM killer writes nothing). Its MLflow runs
        are the driver's to close, on the queue's event (raysweep.sweep.runs)."""
        unfinished = self.todo(item)
        if unfinished and not any(failures_since(n.spec.node_dir, since) for n in unfinished):
            record_failure(unfinished[0].spec, error)
