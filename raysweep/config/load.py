"""Reading a study: YAML (with `1e-3` a float), `--set key=value` overrides, size guards that run
before validation, and pydantic's errors rewritten to name the dotted key and what to change."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raysweep.config.errors import StudyConfigError
from raysweep.config.study import Study

DEFAULT_STUDY = Path(__file__).resolve().parent.parent.parent / "search_spaces" / "default.yaml"


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3` and would give a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


MAX_STUDY_BYTES = 1 << 20  # a study file is a few KB; a bigger one is not a study
MAX_VALUES = 100_000  # values in a study after YAML aliases are expanded (the default study has ~200)
MAX_LIST = 10_000  # items in one list (a sweep axis); the paper's largest has 10


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _too_big(doc: Any, where: str = "") -> str | None:
    """The first key whose value is too big (a list over MAX_LIST items, or more than MAX_VALUES
    values in all once aliases are expanded: `&a [*b, *b, ...]` nested a few deep is billions),
    walked with a budget so the walk itself stays small."""
    budget = [MAX_VALUES]
    todo = [(where, doc)]
    while todo:
        key, node = todo.pop()
        budget[0] -= 1
        if budget[0] < 0:
            return f"{key or '(top level)'}: more than {MAX_VALUES:,} values in the study (YAML aliases expand each time they are used)"
        if isinstance(node, dict):
            todo += [(f"{key}.{k}" if key else str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            if len(node) > MAX_LIST:
                return f"{key}: {len(node):,} items, more than the {MAX_LIST:,} a study list may hold"
            todo += [(key, v) for v in node]
    return None


def _apply_override(doc: dict, item: str, problems: list[str]) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"--set {item!r}: expected key=value, e.g. --set pretrain.mix_fraction=[0,0.5]")
        return
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        problems.append(f"--set {key}: value {raw!r} is not valid YAML ({e.__class__.__name__})")
        return
    node = doc
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(f"--set {key}: {part!r} is a value, not a section")
            return
        node = child
    node[parts[-1]] = value


def _describe(err: dict, overridden: set[str]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    field = re.match(r"([a-z_]+): ", msg)
    if err["type"] == "value_error" and err["loc"] and field:  # a section's check that names one of its keys
        key, msg = f"{key}.{field[1]}", msg[field.end() :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see search_spaces/default.yaml for every key)"
    origin = " [from --set]" if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overridden) else ""
    got = err.get("input")
    shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {msg}{shown}{origin}" if err["loc"] else f"{msg}{origin}"  # cross-checks name their keys


def load_study(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Study:
    """Read a study file, apply `key=value` overrides, validate, and return the Study.

    Raises StudyConfigError (listing every problem) on anything invalid.
    """
    path = Path(path) if path is not None else DEFAULT_STUDY
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_STUDY_BYTES:
            raise StudyConfigError(source, [f"{size:,} bytes; a study file is at most {MAX_STUDY_BYTES:,} (is this the right file?)"])
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise StudyConfigError(source, ["file not found; pass --config with a path to a study YAML"]) from None
    except UnicodeDecodeError as e:
        raise StudyConfigError(source, [f"not UTF-8 text (byte {e.start})"]) from None
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as e:
        raise StudyConfigError(source, [f"not valid YAML: {e}"]) from None
    if doc is None:  # an empty file is a mistake (a wrong path, a file not saved), not a request for every default
        raise StudyConfigError(
            source,
            [
                "the file is empty (or only comments); a study file sets at least one key (search_spaces/default.yaml shows them all), "
                "or leave out --config to run the default study"
            ],
        )
    if not isinstance(doc, dict):
        raise StudyConfigError(source, [f"the top level must be a mapping of keys, got {type(doc).__name__}"])

    problems: list[str] = []
    overridden: set[str] = set()
    for item in overrides:
        _apply_override(doc, item, problems)
        overridden.add(item.partition("=")[0].strip())
    big = _too_big(doc)
    if big:  # before validation, which would expand it
        raise StudyConfigError(source, [big])
    try:
        study = Study.model_validate(doc)
    except ValidationError as e:
        problems += [_describe(err, overridden) for err in e.errors()]
        study = None
    if problems:
        raise StudyConfigError(source, problems)
    return study
