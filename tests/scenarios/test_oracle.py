"""An oracle for the platform's arithmetic: the smoke study's whole tree trained again by a plain
PyTorch loop that knows nothing of Ray, slots, nodes or raysweep's training code, fed the same
blocks in the same order (read from the study's cached plans with numpy), the same initial
weights, optimizer, schedule, clipping, evaluation and early stopping. Every node's final losses
must equal raysweep's: a difference is a bug to find, not a tolerance to widen."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# stage 1 within 1e-5; stages 2 and 3 start from weights that already differ by float rounding
TOLERANCE = {"pretrain": 1e-5, "posttrain": 1e-4, "finetune": 1e-3}


def seed_of(root: int, *path) -> int:
    """The platform's documented seed rule: the first 4 bytes, little-endian, of SHA-256 of the path."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, (root, *path))).encode()).digest()[:4], "little")


def blocks_of(plan_file: str) -> tuple[np.ndarray, dict]:
    """All blocks of a stream, from its plan's arrays and its token shards, with numpy alone."""
    folder = Path(plan_file).parent
    plan, stats = json.loads(Path(plan_file).read_text()), json.loads((folder / "stats.json").read_text())
    a = {k: np.load(folder / f"{k}.npy") for k in ("file", "pos", "count", "eos")}
    shards = [np.fromfile(folder / f["path"], dtype=plan["dtype"]) for f in plan["files"]]
    pieces = []
    for f, p, c, e in zip(a["file"], a["pos"], a["count"], a["eos"]):
        pieces += [shards[f][p : p + c].astype(np.int64), np.full(int(e), plan["eos_id"], dtype=np.int64)]
    flat, L = np.concatenate(pieces), plan["block_len"]
    return flat[: stats["blocks"] * L].reshape(-1, L), stats


def heldout(plan_file: str, max_tokens: int) -> torch.Tensor:
    blocks, stats = blocks_of(plan_file)
    n = min(len(blocks), max(1, max_tokens // blocks.shape[1]))
    if n < len(blocks):
        rng = np.random.default_rng(seed_of(stats.get("seed") or 0, "heldout", Path(plan_file).parent.name))
        blocks = blocks[np.sort(rng.choice(len(blocks), size=n, replace=False))]
    return torch.from_numpy(blocks)


def lr(step, peak, floor, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def mean_loss(model, blocks: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        total = sum(
            F.cross_entropy(model(input_ids=b[:, :-1]).logits.flatten(0, 1), b[:, 1:].flatten(), reduction="sum").double().item()
            for b in blocks.split(32)
        )
    model.train()
    return total / blocks[:, 1:].numel()


def train(model, spec: dict, plan_file: str, evals: dict, warmup_shift: int = 0) -> dict:
    """The oracle loop: AdamW (0.9, 0.95; decay on matrices), warmup + cosine, clip 1.0, every pass
    a seeded permutation of the whole batches' rows, evaluation and early stopping on the best weights."""
    blocks, stats = blocks_of(plan_file)
    B, steps = spec["batch_size"], len(blocks) // spec["batch_size"]
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=spec["lr"], betas=(0.9, 0.95))
    best, best_state, bad = math.inf, None, 0
    for step in range(spec["max_steps"]):
        p, k = divmod(step, steps)
        order = np.random.default_rng(seed_of(stats.get("seed") or 0, "pass", p)).permutation(steps * B)
        x = torch.from_numpy(blocks[order[k * B : (k + 1) * B]])
        for g in opt.param_groups:
            g["lr"] = lr(step, spec["lr"], spec["min_lr"], spec["warmup_steps"] + warmup_shift, spec["max_steps"])
        loss = F.cross_entropy(model(input_ids=x[:, :-1]).logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % spec["eval_every"] == 0 or step + 1 == spec["max_steps"]:
            current = {m: mean_loss(model, evals[m]) for m in spec["monitor"]}
            if spec["early_stop_on"]:
                if current[spec["early_stop_on"]] < best - 1e-4:
                    best, bad = current[spec["early_stop_on"]], 0
                    best_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
                else:
                    bad += 1
                    if bad >= spec["patience"]:
                        break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {m: mean_loss(model, evals[m]) for m in evals}


def oracle_tree(study, data, warmup_shift: int = 0) -> dict[str, dict]:
    """Every node of the study's tree trained by the oracle, parents first; node key -> final losses."""
    from raysweep.sweep.plan import plan
    from raysweep.train.model import build_model  # the initial weights only: the arms' shared start

    arms, subtrees = plan(study, data)
    eval_tokens = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
    evals = {r: heldout(str(s.path), eval_tokens) for r, s in data.heldout.items()}
    weights, out = {}, {}
    torch.set_num_threads(1)
    for node in [*arms, *(m for n2, children in subtrees for m in (n2, *children))]:
        spec = node.spec.__dict__
        model = build_model(study.model.shape, data.vocab_size, study.model.seq_len, seed=spec["seed"])
        if node.parent is not None:
            model.load_state_dict(weights[node.parent])
        out[spec["node_key"]] = train(model, spec, str(node.stream.path), evals, warmup_shift)
        weights[spec["node_key"]] = {n: t.detach().clone() for n, t in model.state_dict().items()}
    return out


@pytest.mark.slow
def test_the_oracle_and_raysweep_agree_on_every_node_of_the_smoke_tree(smoke_study, smoke_data):
    from tests.helpers import node_results

    study, summary, _ = smoke_study
    _, data = smoke_data
    got = node_results(study.out)
    want = oracle_tree(study, data)
    stage = {json.loads(p.read_text())["spec"]["node_key"]: p.parent.parent.name for p in (study.out / "checkpoints").glob("*/*/node.json")}
    assert set(want) <= set(got)
    worst = {}
    for key, losses in want.items():
        for name, value in losses.items():
            rel = abs(got[key]["losses"][name] - value) / value
            worst[stage[key]] = max(worst.get(stage[key], 0.0), rel)
            assert rel <= TOLERANCE[stage[key]], (stage[key], key, name, got[key]["losses"][name], value)
    print(f"oracle vs raysweep, worst relative difference per stage: {worst}")
    # and the oracle can tell: the first arm with its warmup one step off is far outside the tolerance
    from raysweep.sweep.plan import plan
    from raysweep.train.model import build_model

    arm = plan(study, data)[0][0]
    eval_tokens = min(study.pretrain.eval_tokens, study.posttrain.eval_tokens, study.finetune.eval_tokens)
    evals = {r: heldout(str(s.path), eval_tokens) for r, s in data.heldout.items()}
    model = build_model(study.model.shape, data.vocab_size, study.model.seq_len, seed=arm.spec.seed)
    off = train(model, arm.spec.__dict__, str(arm.stream.path), evals, warmup_shift=1)
    shifted = max(abs(got[arm.spec.node_key]["losses"][n] - v) / v for n, v in off.items())
    print(f"with the warmup one step off, the first arm differs by {shifted:.2e}")
    assert shifted > 10 * TOLERANCE["pretrain"]
