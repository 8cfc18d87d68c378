"""Training configuration: one pydantic model, filled from CLI flags or a YAML/JSON file.

Task presets name the data files and the label vocabulary, so
``train sentiment`` is enough; every field can still be overridden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from textpulse.settings import load_yaml_model

Kind = Literal["sequence", "token"]


@dataclass(frozen=True, slots=True)
class TaskPreset:
    """Where a task's data lives (relative to the data directory) and how to score it."""

    dataset: str
    kind: Kind
    train: str
    dev: str | None  # None: carve dev from train
    select_metric: str
    train_split: str | None = None
    dev_split: str | None = None
    oos_label: str | None = None
    licence: str = ""


TASKS: dict[str, TaskPreset] = {
    "sentiment": TaskPreset(
        "twitter_fin_sentiment",
        "sequence",
        "twitter_fin_sentiment/sent_train.csv",
        None,
        "macro_f1",
        licence="MIT (zeroshot/twitter-financial-news-sentiment)",
    ),
    "phrasebank": TaskPreset(
        "fin_phrasebank",
        "sequence",
        "fin_phrasebank/Sentences_50Agree.txt",
        None,
        "accuracy",
        licence="CC BY-NC-SA 3.0 (Financial PhraseBank): research/evaluation only, not commercial",
    ),
    "topic": TaskPreset(
        "twitter_fin_topic",
        "sequence",
        "twitter_fin_topic/topic_train.csv",
        None,
        "accuracy",
        licence="MIT (zeroshot/twitter-financial-news-topic)",
    ),
    "banking77": TaskPreset(
        "banking77",
        "sequence",
        "banking77/train.csv",
        None,
        "accuracy",
        licence="CC BY 4.0 (PolyAI Banking77)",
    ),
    # Dev (checkpoint choice and out-of-scope threshold) is carved from train + oos_train, so the
    # official ``val`` + ``oos_val`` neither chose nor calibrated anything: bench-route and
    # ``eval --split val`` score it. The official test split stays held out.
    "clinc150": TaskPreset(
        "clinc150",
        "sequence",
        "clinc150/data_full.json",
        None,
        "oos_score",
        train_split="train",
        oos_label="oos",
        licence="CC BY 3.0 (clinc/oos-eval)",
    ),
    "finer_ord": TaskPreset(
        "finer_ord",
        "token",
        "finer_ord/train.csv",
        "finer_ord/val.csv",
        "weighted_f1",
        licence="CC BY-NC 4.0 (FiNER-ORD): research/evaluation only, not commercial",
    ),
    "wnut17": TaskPreset(
        "wnut17",
        "token",
        "wnut17/wnut17train.conll",
        "wnut17/emerging.dev.conll",
        "micro_f1",
        licence="CC BY 4.0 (WNUT-17)",
    ),
}
TASK_ALIASES = {"intent": "banking77", "ner": "finer_ord"}


def resolve_task(name: str) -> tuple[str, TaskPreset]:
    """Return (canonical task name, preset) for a task or alias."""
    canonical = TASK_ALIASES.get(name, name)
    if canonical not in TASKS:
        msg = f"unknown task {name!r}; choose one of {sorted([*TASKS, *TASK_ALIASES])}"
        raise KeyError(msg)
    return canonical, TASKS[canonical]


class ExtraTaskData(BaseModel):
    """Data knobs of one extra (multi-head) task that differ from the primary task's.

    Unset fields follow the run's own; set them so an extra head's train subset and carved
    dev set are the ones its single-task profile uses (same carve, seed and subsample), which
    keeps the multi-head and single-task dev figures comparable.
    """

    model_config = ConfigDict(extra="forbid")

    dev_fraction: float | None = Field(None, gt=0, lt=1)
    limit_train: int | None = Field(None, ge=1)
    limit_dev: int | None = Field(None, ge=1)


class TokenMix(BaseModel):
    """A second token-classification data set mixed into a token task's training rows.

    Its entity types are mapped onto the primary task's (``label_map``; a type not listed is
    dropped: its words are tagged ``O``), a dev split is carved from its *training* file (never
    trained on; scored at the end of the run, ``metrics.json`` → ``dev_mix``; ``dev_fraction`` 0
    carves none), rows that are near-twins of the primary dev rows are dropped, and its rows go
    through the same word normalisation as the primary rows (``normalise_words``). Checkpoint
    selection stays on the primary dev set. Test files are refused: decisions are taken on dev.
    """

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Token task preset whose training file is mixed in, e.g. wnut17.")
    file: str | None = Field(None, description="A training file of that format instead of the preset's.")
    label_map: dict[str, str] = Field(
        min_length=1,
        description="Entity type of the mixed set -> entity type of the primary labels (PER, LOC, ORG); "
        "types not listed are dropped (tagged O).",
    )
    limit: int | None = Field(None, ge=0, description="At most this many of its sentences (seeded by `seed`).")
    weight: float = Field(
        1.0,
        ge=0,
        description="Times each kept sentence is seen per epoch (a fractional part is a seeded sample); "
        "0 trains on none of it but still carves and scores its dev split (the baseline on the same rows).",
    )
    dev_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Dev carve from its training file (seed data_seed); 0 carves none: every sentence may be "
        "trained on (an official dev file the primary dev split does not read) and nothing is scored.",
    )
    limit_dev: int | None = Field(None, ge=1, description="At most this many of its dev sentences.")

    @model_validator(mode="after")
    def _does_something(self) -> TokenMix:
        if self.weight == 0 and self.dev_fraction == 0:
            msg = "a mix with weight 0 and dev_fraction 0 neither trains nor scores anything"
            raise ValueError(msg)
        return self


class TrainConfig(BaseModel):
    """Every knob of one training run; saved resolved beside the model."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task preset: " + ", ".join(TASKS))
    extra_tasks: list[str] = Field(
        default_factory=list,
        description="More sequence tasks trained as extra heads on the shared encoder (multi-task).",
    )
    extra_task_data: dict[str, ExtraTaskData] = Field(
        default_factory=dict,
        description="Per extra task (by name): dev_fraction / limit_train / limit_dev overriding the run's.",
    )
    select_on: Literal["mean", "primary"] = Field(
        "mean",
        description=(
            "Checkpoint selection with extra tasks: 'mean' of every task's dev metric (a multi-head model "
            "serving all heads), or 'primary' only (extra tasks as auxiliary data for the primary task)."
        ),
    )
    mix: list[TokenMix] = Field(
        default_factory=list,
        description="Token tasks only: more token data sets mixed into the training rows (TokenMix).",
    )
    output_dir: Path
    base_model: str | None = Field(None, description="HF name or path; default the bundled all-MiniLM-L6-v2.")
    train_file: str | None = None
    dev_file: str | None = None
    dev_fraction: float = Field(0.1, gt=0, lt=1)
    carve_dev: bool | None = Field(
        None,
        description=(
            "Carve dev from train (True) or read the preset's dev file (False); None: the preset decides. "
            "Training saves the resolved value so training_config.json rebuilds the same dev set."
        ),
    )
    seed: int = 13
    data_seed: int = Field(13, description="Seed of the dev carve-out (kept fixed across runs).")
    limit_train: int | None = Field(None, ge=1, description="Use a seeded random subset of train.")
    limit_dev: int | None = Field(None, ge=1)
    max_length: int = Field(128, ge=8, le=512)
    text_normalisation: Literal["none", "links", "social"] = Field(
        "none",
        description=(
            "Sequence tasks: what the encoder is shown. 'links' replaces links by a placeholder word, "
            "'social' links and user handles (textpulse.ml.social.normalise), in train, dev and "
            "calibration rows; the choice is saved in the model's config so serving shows it the same "
            "text. Token tasks always split words the 'social' way."
        ),
    )
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimiser steps.")
    lr: float = Field(5e-5, gt=0)
    head_lr: float | None = Field(None, gt=0, description="Head learning rate; default 10x lr.")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    pooling: Literal["mean", "first"] = "mean"
    dropout: float = Field(0.1, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    eval_every: int | None = Field(None, ge=1, description="Also evaluate every N steps (default: per epoch).")
    patience: int = Field(3, ge=1, description="Evaluations without dev improvement before stopping.")
    select_metric: str | None = None
    device: str | None = Field(None, description="cpu, cuda, cuda:0 ... (default: cuda when available)")
    amp: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads.")
    progress: bool = True
    # Recipe levers of issue #21; each stays at its no-op default in a profile until dev shows it pays
    # (docs/models.md, "Recipe levers").
    layerwise_lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "Layer-wise LR decay: the top encoder layer trains at lr, each layer below at this factor times "
            "the one above, the embeddings one step below the bottom layer. 1.0 is off."
        ),
    )
    average_last: int = Field(
        1,
        ge=1,
        description=(
            "Checkpoint averaging: the mean of the weights at the last N evaluations becomes one more "
            "candidate for checkpoint selection (scored on dev like the others). 1 is off."
        ),
    )
    rdrop_alpha: float = Field(
        0.0,
        ge=0,
        description=(
            "R-Drop: two dropout passes per batch, loss = mean of both cross-entropies + alpha x their "
            "symmetric KL. 0 is off (one pass)."
        ),
    )
    oos_min_recall: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "Tasks with an out-of-scope label: fit the oos threshold as the lowest one whose oos recall "
            "on the fitting split reaches this floor (the most in-scope accuracy the floor allows). None: "
            "the threshold maximising in-scope accuracy + oos recall."
        ),
    )
    calibration_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "Tasks with an out-of-scope label: carve this fraction of the train rows left after the dev "
            "carve as a calibration split (near-duplicate aware, data_seed) and fit the oos threshold "
            "there, so dev, which picks the checkpoint, scores a threshold it did not choose; limit_dev caps it "
            "too. None: the threshold is fitted on dev."
        ),
    )

    @property
    def resolved_head_lr(self) -> float:
        """Head LR: a fresh head needs a larger step than the pretrained encoder."""
        return self.head_lr if self.head_lr is not None else self.lr * 10


class ConfigFileError(ValueError):
    """A training config file that cannot be read or is not a mapping of fields (one clear line)."""


# The file holds a partial TrainConfig/PretrainConfig (flags and presets fill the rest), so the
# shared loader checks only that it is a mapping; the full model validates after the merge.
_ConfigFields = RootModel[dict[str, Any]]


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (fields of :class:`TrainConfig`).

    Raises :class:`ConfigFileError` naming the file and the problem (unreadable, invalid
    YAML/JSON, not a mapping), through the services' shared loader.
    """
    return load_yaml_model(path, _ConfigFields, what="training config", error=ConfigFileError).root
