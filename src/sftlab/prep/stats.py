"""Preprocessing statistics: length percentiles and the short summary printed to the terminal."""

from __future__ import annotations

from sftlab.augment.stats import decontaminated_against


def percentiles(values: list[int]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p90": round(float(np.percentile(a, 90)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": int(a.max()),
        "mean": round(float(a.mean()), 1),
    }


def format_stats(stats: dict) -> str:
    """A short human-readable block for the terminal."""
    from sftlab.data import format_skips

    lines = [
        f"source: {stats['source']}",
        f"records read: {stats['records_read']}  kept: {stats['kept']}  ({format_skips(stats['skipped'])})",
    ]
    if stats.get("dropped_turns"):
        lines.append("dropped turns: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["dropped_turns"].items())))
    lines += [
        f"shapes: single-turn {stats['single_turn']}, multi-turn {stats['multi_turn']}",
        f"tokens: {stats['total_tokens']:,} total, {stats['trained_tokens']:,} trained "
        f"({100 * stats['trained_share']:.1f}%), masking={stats['masking']}"
        + "".join(f", {k}=false" for k in ("train_on_eos", "train_on_role_header") if stats.get(k) is False)
        + (f", {stats['weighted_conversations']} with message weights" if stats.get("weighted_conversations") else ""),
        "length (before truncation): p50 {p50:g}  p90 {p90:g}  p99 {p99:g}  max {max}".format(**stats["length"]),
        f"truncated ({stats['truncation']} side, max_length {stats['max_length']}): {stats['truncated']}",
    ]
    rep = stats.get("replies")
    if rep:
        lines.append(f"self-distilled replies ({rep['model']}, up to {rep['max_new_tokens']} new tokens): "
                     f"{rep['replaced']} of {rep['conversations_in']} conversations answered by the model"
                     + "".join(f", {n} dropped: {r}" for r, n in sorted(rep["skipped"].items())))
    aug = stats.get("augment")
    if aug:
        lines.append(f"augmented: {aug['augmented']} with verified instructions, {aug['plain']} plain, "
                     f"{aug['decontaminated']} dropped by {decontaminated_against(aug['decontamination'])} decontamination "
                     f"({aug['decontamination']})"
                     + (f", {aug['openers_stripped']} chatty openings removed" if aug.get("openers_stripped") else "")
                     + (f"; kept for training: {aug['kept_augmented']} augmented, {aug['kept_plain']} plain"
                        if "kept_augmented" in aug else ""))
    for note in stats.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
