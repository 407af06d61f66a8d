"""The study: the whole three-stage study as one object, its sections, the checks that span them,
and what derives from it (its output folders, its content hash)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr, field_validator, model_validator

from raysweep.config.analysis import AnalysisConfig
from raysweep.config.base import _Strict
from raysweep.config.checks import STAGES, cross_checks
from raysweep.config.conventions import ConventionsConfig, check_variants
from raysweep.config.corpora import CorporaConfig
from raysweep.config.model import ModelConfig, TokenizerConfig
from raysweep.config.stages import HASHED_OPERATIONAL, OPERATIONAL, FinetuneConfig, PosttrainConfig, PretrainConfig
from raysweep.config.theory import TheoryConfig
from raysweep.store.keys import json_key
from raysweep.store.storage import is_remote


def _excluded(paths: list[str]) -> dict:
    """pydantic's `exclude` for dotted field paths: ["a", "b.c"] -> {"a": True, "b": {"c"}}."""
    out: dict = {}
    for path in paths:
        head, _, tail = path.partition(".")
        out[head] = out.get(head, set()) | {tail} if tail else True
    return out


# how a step is split over forwards, and the memory it is fitted to, change no result: out of the study's hash
_OPERATIONAL_STAGE_KEYS = _excluded([p for p in OPERATIONAL if p not in HASHED_OPERATIONAL])


class Study(_Strict):
    """A whole three-stage study: corpora, model, the three stages and where results go."""

    # 100: a folder name (255 bytes at most on ext4/APFS) that still leaves room for the suffixes
    # raysweep adds to it, and an MLflow experiment name every store accepts.
    name: str = Field(
        "default", max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="study name: MLflow experiment and output folder"
    )
    seed: int = Field(0, ge=0, description="root seed; every node's seed derives from it and the node's path")
    output_dir: str = Field("runs/{name}", description="folder for corpora, checkpoints, MLflow store, report ({name} is filled in)")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: a SQLite store inside output_dir")
    checkpoint_dir: str | None = Field(
        None,
        description="the content-addressed node store: a folder, or an object-store URI (s3://bucket/prefix, gs://bucket/prefix; raysweep/store/storage.py); default <output_dir>/checkpoints. Point several studies at one folder and a node any of them finished (same key: parent, stage config, data, tokenizer, seed) is never trained again",
    )
    retries: int = Field(
        2,
        ge=0,
        le=100,
        description="times a failed trial (an exception, a non-finite loss, a lost worker) is retried, from its last progress checkpoint, before it is marked failed",
    )
    max_concurrent_trials: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="warm worker slots (Tune trials, each one Ray Train worker group that trains node after node) per tree run; none: as many as the cluster's CPUs/GPUs can feed now. Set it on an autoscaling cluster (e.g. the GPU workers' max), where the cluster starts small and grows for the slots that wait",
    )
    max_runs: int = Field(
        5_000,
        ge=1,
        le=10_000_000,
        description="a guard: a study whose tree has more runs than this stops before any compute (a typo in a list "
        "of learning rates can ask for tens of thousands); raise it for a study that really is that large. "
        "Operational: not part of any node key",
    )
    model: ModelConfig = ModelConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    corpora: CorporaConfig = CorporaConfig()
    pretrain: PretrainConfig = PretrainConfig()
    posttrain: PosttrainConfig = PosttrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    theory: TheoryConfig = TheoryConfig()
    conventions: ConventionsConfig = ConventionsConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    robustness: list[dict[str, str | bool | float]] = Field(
        [],
        description="variants the study's comparison is run again under, each one convention changed (e.g. "
        "[{schedule: wsd}, {decay_1d: true}]): every node whose key does not change is shared; the summary and the "
        "report give each variant's verdict beside the study's own. Each variant tracks into an MLflow experiment "
        "of its own (<name>.<convention>=<value>). Not part of the study's hash",
    )

    @field_validator("output_dir", "checkpoint_dir")
    @classmethod
    def _only_name_filled_in(cls, value: str | None) -> str | None:
        import string

        if value is None:
            return value
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
        except ValueError as e:
            raise ValueError(f"not a valid folder template ({e}); write a literal brace as {{{{ or }}}}") from None
        for f, spec, conv in fields:
            if f != "name" or spec or conv:
                raise ValueError(
                    f"only {{name}} is filled in (found {{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}); write a literal brace as {{{{ or }}}}"
                )
        return value

    def run_counts(self) -> dict[str, int]:
        """Runs per level, from the config alone (what --dry-run counts before any data exists)."""
        p1, p2 = self.pretrain, self.posttrain
        arms = len(p1.mix_fraction)
        per_arm = (
            p2.trials if p2.search == "optuna" else len(p2.lr) * len(p2.dropout) * len(p2.replay) * len(p2.tuning) * len(p2.batch_sizes)
        )
        if self.model.kind == "linear":
            per_arm = len(p2.lr)
        return {"pretrain": arms, "posttrain": arms * per_arm, "finetune": arms * per_arm * len(self.finetune.lr)}

    @model_validator(mode="after")
    def _cross_checks(self) -> Study:
        """The checks that span several sections (raysweep.config.checks); the first problem found is reported."""
        cross_checks(self)
        if self.robustness and self.model.kind != "lm":
            raise ValueError("robustness: the linear theory backend has no conventions to vary; remove the section")
        check_variants(self.conventions, self.robustness)
        return self

    # a robustness variant's convention change ("schedule-wsd", raysweep.robustness), set on the copy
    # the study makes of itself: neither a setting nor part of the hash
    _variant: str | None = PrivateAttr(None)

    # ---- derived values (never stored, so they cannot disagree with the fields) ----
    @property
    def out(self) -> Path:
        return Path(self.output_dir.format(name=self.name)).expanduser().resolve()

    def own_file(self, name: str) -> Path:
        """A file only this study writes in its output folder (a search's log): `name` there, or for a
        robustness variant, which shares the folder, robustness/<variant>/`name`."""
        return self.out / name if self._variant is None else self.out / "robustness" / self._variant / name

    @property
    def checkpoints(self) -> Path | str:
        if not self.checkpoint_dir:
            return self.out / "checkpoints"
        where = self.checkpoint_dir.format(name=self.name)
        if is_remote(where):  # an object store (raysweep.store.storage): kept as the URI it is
            return where
        return Path(where).expanduser().resolve()

    def content_hash(self) -> str:
        # operational knobs that do not change any result stay out of the study's identity
        doc = self.model_dump(
            mode="json",
            exclude={
                "max_concurrent_trials": True,
                "max_runs": True,
                "checkpoint_dir": True,
                "retries": True,
                "analysis": True,  # how finished checkpoints are judged, not what they are
                "robustness": True,  # other studies run beside this one (each with its own hash)
                "model": {"compile"},
                # how a step is split over forwards, and the memory it is fitted to, change no result
                **{stage: {**_OPERATIONAL_STAGE_KEYS, **({"keep_weights": True} if stage == "finetune" else {})} for stage in STAGES},
            },
        )
        if self.model.kind == "lm":  # fields that do not apply stay out, so older studies keep their hash
            doc.pop("theory")
            doc["model"].pop("kind")
        doc["conventions"] = self.conventions.off_default(*ConventionsConfig.model_fields)
        if not doc["conventions"]:  # today's conventions: older studies keep their hash
            doc.pop("conventions")
        if doc["model"].get("precision") == "auto":  # the default of older studies, which keep their hash
            doc["model"].pop("precision")
        for k in [k for k, v in doc["model"].items() if v is None]:  # shape fields left to the preset
            doc["model"].pop(k)
        # the search's own keys count only where the search is theirs (older studies keep their hash)
        search = self.posttrain.search
        own = {"grid": (), "optuna": ("search", "trials", "optuna_batch"), "halving": ("search", "rungs", "eta", "probe_share")}[search]
        for key in ("search", "trials", "optuna_batch", "rungs", "eta", "probe_share"):
            if key not in own:
                doc["posttrain"].pop(key)
        if search != "halving" or doc["posttrain"]["budget_share"] is None:  # unset: older studies keep their hash
            doc["posttrain"].pop("budget_share")
        return json_key(doc)
