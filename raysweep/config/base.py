"""What every section of a study shares: strict, frozen pydantic models, and the check of a sweep
axis's values."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    # strict: "3" is not silently an int; extra="forbid": a typo is an error, not a default.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _as_axis(value):
    """A sweep axis given one value (`--set finetune.lr=3e-4`, `dropout: 0.1`) is the axis of that
    one value: the same validated list, so `x` and `[x]` give the same study and node keys."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return [value]
    return value


def _grid(values: list[float], lo: float, hi: float, name: str, hi_open: bool = False) -> list[float]:
    if not values:
        raise ValueError(f"needs at least one {name}")
    if len(set(values)) != len(values):
        raise ValueError(f"repeated {name}s: {values}")
    for v in values:
        if not (lo <= v < hi if hi_open else lo <= v <= hi):
            raise ValueError(f"{name} {v} outside [{lo}, {hi}{')' if hi_open else ']'}")
    return values
