"""The demo's report: the results table printed at the end and ``report.md``."""

from __future__ import annotations

import argparse

import numpy as np


def jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def summary_table(m: dict) -> str:
    """The ceiling ladder as a markdown table, with the ratios below it."""
    from neurodecode.demo.ladder import ladder_rows

    rows = ladder_rows(m["ladder"])
    if m.get("prior"):
        at = [name for name, _ in rows].index("ours") + 1
        rows.insert(at, ("ours, diffusion prior output", m["prior"]))
    lines = [
        f"| {m['n_way']}-way identification, {m['subject']} | brain->image top-1 | "
        "image->brain top-1 | brain->image top-5 |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['brain_to_image_top1']:.3f} | {r['image_to_brain_top1']:.3f} | "
            f"{r.get('brain_to_image_top5', float('nan')):.3f} |"
        )
    lines.append("")
    lines.append(
        f"ours / oracle = {m['ratio_to_oracle']:.2f}; ours / feature oracle of "
        f"{m['target_space']} = {m['ratio_to_feature_oracle']:.2f}; ours = "
        f"{m['times_chance']:.0f}x chance; total {m['timing']['total_s']:.0f} s"
    )
    return "\n".join(lines)


def report_markdown(m: dict, args: argparse.Namespace) -> str:
    parts = [
        "# neurodecode demo report",
        "",
        f"Simulated NSD world `{args.data}` (config `{args.sim_config}`), decoder trained with the "
        f"model/data/trainer sections of `{args.experiment}`.",
        "",
        "## Retrieval against the ceiling ladder",
        "",
        "Repeat-averaged shared test trials, MindEye's protocol (random batches of n-way "
        "candidates, 30 draws), every rung on the same trials and candidates. The oracle is the "
        "true model; the feature oracle regresses the true noise-free responses on the target "
        "space (a diagnostic only the simulation allows): no decoder working through that space "
        "can beat it. Its estimator here: "
        + m.get("feature_oracle_estimator", "single penalty")
        + " (`--banded-feature-oracle` gives each '+'-piece of a named target its own penalty, "
        "a fairer and higher bound at several times the cost).",
        "",
        summary_table(m),
        "",
        "![the ceiling ladder](ladder.png)",
        "",
        "![test trials and their top retrieved images](retrieval.png)",
        "",
        "## sim-clip (the embedding space)",
        "",
        "Zero-shot scores on held-out scenes: "
        + ", ".join(f"{k} = {v:.3f}" for k, v in m["sim_clip"].items() if isinstance(v, float)),
        "",
        "## Training",
        "",
        f"{m['training']['epochs']} epochs over {m['training']['train_trials']} single trials, "
        f"{m['training']['samples_per_s']} samples/s on this machine.",
        "",
        "## Timing (s)",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| {k.removesuffix('_s')} | {v} |" for k, v in m["timing"].items()],
        "",
    ]
    return "\n".join(parts)
