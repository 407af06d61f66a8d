"""The queue of one tree run's items, shared by the warm worker slots (raysweep.sweep.slots).

    driver ── WorkQueue (a Ray actor) ── slot 0: Tune trial (or its one worker group) → item, item, …
                                                └─ slot 1: Tune trial (or its one worker group) → item, item, …

An item is a pretraining arm, or a stage-2 node with its stage-3 children (raysweep.sweep.work
says what an item trains). `WorkQueue` is plain Python, tested without Ray (the slots reach it
as a Ray actor); it holds everything that makes the tree's guarantees (README, "Guarantees") hold
with warm slots:

- order and pipelining: items start in the given order; a subtree waits only for its own arm
  (an arm trained in this run), never for the slowest one;
- retries per item, not per slot: a failed item goes back to the queue (it resumes from its
  progress checkpoint) until it has failed `retries + 1` times, then it is failed for good and
  the subtrees of a failed arm are failed as blocked; a diverged arm blocks its subtrees
  silently (an outcome, not a failure);
- holding: the item each slot took is known, so a slot whose fit or whose trial died gives it
  back as a failed attempt, and the other slots go on. (Not raysweep.store.leases: those are the node
  store's, between studies; this is one queue's record of its slots.)
"""

from __future__ import annotations

import time

WAIT = "wait"  # take(): nothing is ready now, but something will be (an arm is still training)

Item = tuple  # ("arm", i), ("subtree", j) or ("leaf", j, c)


class WorkQueue:
    """The queue of one tree run. `needs[item]` is the arm item it waits for (None: ready)."""

    def __init__(self, items: list[Item], needs: dict[Item, Item | None], retries: int):
        self.pending = list(items)
        self.needs = {i: needs.get(i) for i in items}
        self.retries = retries
        self.holding: dict[int, Item] = {}  # slot -> the item it took and has not settled
        self.taken_at: dict[int, float] = {}  # slot -> when it took its item (its attempt's start)
        self.attempts: dict[Item, int] = {}
        self.settled: dict[Item, str] = {}  # item -> "done" | "diverged" | "blocked"
        self.failed: dict[Item, str] = {}  # item -> its last error, failed for good
        self.events: list[tuple] = []  # (seconds, what, item, text) for the driver's progress lines
        self.t0 = time.time()

    # --------------------------------------------------------------- what slots ask
    def take(self, slot: int, kinds: tuple[str, ...] = ("arm", "subtree", "leaf")) -> Item | str | None:
        """The next item for `slot`, WAIT, or None when nothing of `kinds` is left to do."""
        held = self.holding.pop(slot, None)
        if held is not None:  # a slot asks again without settling: its item's attempt failed
            self._fail(held, "its slot asked for new work without finishing it")
        mine = [i for i in self.pending if i[0] in kinds]
        for item in mine:
            need = self.needs[item]
            if need is None or self.settled.get(need) == "done":
                self.pending.remove(item)
                self.holding[slot] = item
                self.taken_at[slot] = time.time()
                self.attempts[item] = self.attempts.get(item, 0) + 1
                self._event("start", item, f"slot {slot}")
                return item
        return WAIT if mine else None

    def settle(self, slot: int, outcome: str = "done", text: str = "") -> None:
        """The slot's item finished: "done", or "diverged" (an arm that diverged blocks its subtrees)."""
        item = self.holding.pop(slot)
        self.settled[item] = outcome
        self._event("done" if outcome == "done" else outcome, item, text)
        if outcome != "done":
            for other in self._dependents(item):
                self.pending.remove(other)
                self.settled[other] = "blocked"
                self._event("blocked", other, f"its arm {outcome}")

    def fail(self, slot: int, error: str) -> bool:
        """The slot's item failed (its attempt raised, or its slot died). True when it goes back to the queue."""
        item = self.holding.pop(slot, None)
        return False if item is None else self._fail(item, error)

    def held_by(self, slot: int) -> tuple[Item, float] | None:
        """(the item `slot` holds, when its attempt started), or None."""
        item = self.holding.get(slot)
        return None if item is None else (item, self.taken_at[slot])

    def has_work(self, kinds: tuple[str, ...] = ("arm", "subtree", "leaf")) -> bool:
        """Is an item of `kinds` waiting to be taken? (A slot that sees none stops.)"""
        return any(i[0] in kinds for i in self.pending)

    # --------------------------------------------------------------- what the driver reads
    def events_since(self, n: int) -> list[tuple]:
        return self.events[n:]

    def outcome(self) -> tuple[dict[Item, str], dict[Item, str], list[Item]]:
        """(settled, failed for good, never trained) once the slots have stopped."""
        return dict(self.settled), dict(self.failed), [*self.pending, *self.holding.values()]

    # --------------------------------------------------------------- internals
    def _fail(self, item: Item, error: str) -> bool:
        if self.attempts.get(item, 0) <= self.retries:
            self.pending.insert(self._position(item), item)
            self._event("retry", item, error)
            return True
        self.failed[item] = error
        self._event("failed", item, error)
        for other in self._dependents(item):
            self.pending.remove(other)
            self.failed[other] = f"blocked (its {'pretraining arm' if item[0] == 'arm' else 'stage-2 run'} failed)"
            self._event("failed", other, self.failed[other])
        return False

    def _position(self, item: Item) -> int:
        """A retried item goes back before the items that would have started after it (its place in the order)."""
        order = list(self.needs)
        return sum(1 for i in self.pending if order.index(i) < order.index(item))

    def _dependents(self, item: Item) -> list[Item]:
        """The pending items that wait for `item`, directly or through another (a leaf waits for its
        subtree, which waits for its arm)."""
        out, frontier = [], [item]
        while frontier:
            above = frontier.pop()
            below = [i for i in self.pending if self.needs[i] == above and i not in out]
            out += below
            frontier += below
        return out

    def _event(self, what: str, item: Item, text: str) -> None:
        self.events.append((time.time() - self.t0, what, item, text))
