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
    n_way = m["retrieval"]["n_way"]
    rows = [("retrieval head (ours)", m["retrieval"])]
    if m.get("prior"):
        rows.append(("diffusion prior output", m["prior"]))
    rows += [
        ("ridge baseline", m["baselines"]["ridge"]),
        ("oracle (true model)", m["oracle"]),
    ]
    lines = [
        f"| {n_way}-way retrieval, {m['retrieval']['subject']} | brain->image top-1 | "
        "image->brain top-1 | brain->image top-5 |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['brain_to_image_top1']:.3f} | {r['image_to_brain_top1']:.3f} | "
            f"{r.get('brain_to_image_top5', float('nan')):.3f} |"
        )
    lines.append(f"| chance | {1 / n_way:.4f} | {1 / n_way:.4f} | {5 / n_way:.4f} |")
    lines.append("")
    lines.append(
        f"ours / oracle = {m['ratio_to_oracle']:.2f}; ours = {m['times_chance']:.0f}x "
        f"chance; total {m['timing']['total_s']:.0f} s"
    )
    return "\n".join(lines)


def report_markdown(m: dict, args: argparse.Namespace) -> str:
    parts = [
        "# neurodecode demo report",
        "",
        f"Simulated NSD world `{args.data}` (config `{args.sim_config}`), decoder trained with the "
        f"model/data/trainer sections of `{args.experiment}`.",
        "",
        "## Retrieval (MindEye protocol: repeat-averaged shared test trials, cosine, 30 draws)",
        "",
        summary_table(m),
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
