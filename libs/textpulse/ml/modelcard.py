"""Markdown model cards: what the model is, what data it saw, how it scored, its limits."""

from __future__ import annotations

from typing import Any

_NON_COMMERCIAL = ("NC", "research")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_model_card(
    name: str,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    *,
    evaluation_data: str | None = None,
) -> str:
    """Return a model card; ``metrics`` is a flat-or-nested metrics dict."""
    licence = str(meta.get("data_licence", "unknown"))
    headline = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    lines = [
        f"# {name}",
        "",
        f"- **Task:** {meta.get('task')} ({meta.get('kind')} classification, {len(meta.get('labels', []))} labels)",
        f"- **Base model:** `{meta.get('base_model')}` ({meta.get('parameters', '?')} parameters,"
        f" {'LoRA merged' if meta.get('lora') else 'full fine-tune'}, pooling: {meta.get('pooling')})",
        f"- **Training data:** `{meta.get('train_data')}` ({meta.get('n_train', '?')} examples)",
        f"- **Dev data:** {meta.get('dev_data')} ({meta.get('n_dev', '?')} examples)",
        f"- **Data licence:** {licence}",
        f"- **Evaluated on:** {evaluation_data or meta.get('dev_data')}",
        "",
        "## Metrics",
        "",
        "Figures are on a dev split carved from the training files (the official test splits are "
        "held out), unless the evaluation data above says otherwise.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in headline.items()],
        "",
    ]
    per_class = metrics.get("per_class") or metrics.get("per_type") or {}
    if per_class:
        lines += ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [
            f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
            for label, v in per_class.items()
        ]
        lines.append("")
    lines += [
        "## Labels",
        "",
        ", ".join(f"`{label}`" for label in meta.get("labels", [])),
        "",
        "## Limits",
        "",
        f"- Inputs longer than {meta.get('max_length')} sub-word tokens are truncated.",
        "- English only; trained on one domain, so expect lower quality on other text.",
        "- Confidence scores are softmax outputs and are not calibrated probabilities.",
    ]
    if meta.get("oos_threshold") is not None:
        # Models trained with calibration_fraction fit the threshold on a split of their own, not on dev.
        where = "a calibration split carved from train" if meta.get("n_calibration") else "dev"
        floor = meta.get("oos_min_recall")
        rule = "maximise in-scope accuracy + oos recall"
        if floor:
            rule = f"the lowest threshold keeping oos recall >= {floor:.2f}"
        lines.append(
            f"- Out-of-scope: a query is `oos` when the top probability is below {meta['oos_threshold']:.2f}"
            f" (calibrated on {where}: {rule}).",
        )
    if any(marker in licence for marker in _NON_COMMERCIAL):
        lines.append(
            "- **The training data is licensed for non-commercial use only; use this model for "
            "research and evaluation, not in a commercial product.**",
        )
    return "\n".join(lines) + "\n"
