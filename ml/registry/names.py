"""The names stockq gives things in MLflow: experiments, the champion alias, artifact files, tags. Read by
the registry adapter that writes them and by the readers (cards, versions) that must not import it."""

from __future__ import annotations

CHAMPION = "champion"
EXPERIMENT = "stockq"  # the experiment of the training runs
MODEL_DIR = "model"
CARD_FILE = "model_card.json"
EVALUATIONS = "stockq-evaluations"  # the experiment of the evaluation runs
EVALUATION_FILE = "evaluation.json"
RECIPE_TAG, UNIVERSE_TAG = "recipe", "universe"
JOB_TAG = "stockq.job_key"  # on a training run: the job that trained it
DECISION_TAG = "stockq.decision"  # on a version: the champion decision's text
RECORD_TAG = "stockq.decision_record"  # on a version: the whole decision as JSON (ml.registry.registration)
