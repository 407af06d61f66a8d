"""The MLflow tags raysweep writes, named once: the tracker writes them and the analysis reads
them back (analysis/runs.py), without importing the tracker."""

NODE_KEY = "raysweep.node_key"  # a node run's key: how a resumed study finds its run again
STAGE = "raysweep.stage"  # study | pretrain | posttrain | finetune
STUDY_HASH = "raysweep.study_hash"  # the study run's content hash
DESCRIPTION = "mlflow.note.content"  # a run's description in the MLflow UI
# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces); these are training runs
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
METHOD = "raysweep.method"  # unmixed, mixed, +dropout, +replay, +lora (raysweep.sweep.plan.method_of)
MIX_FRACTION = "raysweep.mix_fraction"  # λ of the run's arm
PARENT_NODE = "raysweep.parent_node"  # the parent node's key
SYNCED = "raysweep.synced_points"  # how many stored points a sync delivered (a repeated sync skips the run)
SYNCED_RESULT = "raysweep.synced_result"  # the key of the stored result a node run's final metrics show
SLICES_SIGNATURE = "raysweep.slices_signature"  # the held-out slices a run's per-slice metrics were scored on
SLICES_STEP = "raysweep.slices_step"  # the step they were logged at (one more for each new signature)
SLICES = "raysweep.slices"  # how many slices the latest signature has (older metrics of more slices may remain)
SLICES_KEY = "raysweep.slices_key"  # the key of the losses logged: a node scored again with other values logs them again
FINAL_STEP = "raysweep.final_step"  # the step of those final metrics: +1 each time the result is a new one
FINISHES = "raysweep.finishes"  # on the study run: how many summary points it has (see tracking.finish_study)
FAILURE = "raysweep.failure"  # on a study run that stopped on an error: the error's message
OUTCOME = "raysweep.outcome"  # on runs that did not finish normally: diverged | blocked | failed | interrupted
SAMPLER = "raysweep.sampler"  # on the study run of an Optuna search: the Optuna version and TPE's options
PROBE = "raysweep.probe"  # halving's rung and probe runs ("rung <k>"): they inform the search, off the frontier tables
