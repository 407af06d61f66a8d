"""The study: one typed, validated object loaded from YAML, the only place defaults live.

A study file is data. Every key is checked against the schema before Ray starts; unknown keys,
wrong types and out-of-range values are collected and raised together in one `StudyConfigError`
that names the file, the dotted key and what to change.

Convention: inside a stage, a field given as a list is a sweep axis (the grid is their product); a
scalar is held fixed. The modules follow the file's sections:

    errors   the two errors          base     strict models, axis checks
    model    model, tokenizer        corpora  D_pre, D_post, D_ft
    stages   the three stages        theory   the linear network (model.kind: linear)
    analysis how finished checkpoints are judged (held-out slices)
    conventions  the protocol choices the paper leaves unstated; the robustness variants of them
    checks   checks across sections  study    Study: the sections, its hash, its folders
    load     YAML, --set overrides, error messages
"""

from raysweep.config.corpora import SYNTHETIC_CORPORA, TEMPLATES, CorporaConfig, CorpusConfig
from raysweep.config.errors import StudyConfigError, StudyInputError
from raysweep.config.load import DEFAULT_STUDY, load_study, parse_yaml
from raysweep.config.model import ModelConfig, TokenizerConfig
from raysweep.config.stages import FinetuneConfig, PosttrainConfig, PretrainConfig, ResourcesConfig
from raysweep.config.study import Study
from raysweep.config.theory import TheoryConfig

__all__ = [
    "DEFAULT_STUDY",
    "SYNTHETIC_CORPORA",
    "TEMPLATES",
    "CorporaConfig",
    "CorpusConfig",
    "FinetuneConfig",
    "ModelConfig",
    "PosttrainConfig",
    "PretrainConfig",
    "ResourcesConfig",
    "Study",
    "StudyConfigError",
    "StudyInputError",
    "TheoryConfig",
    "TokenizerConfig",
    "load_study",
    "parse_yaml",
]
