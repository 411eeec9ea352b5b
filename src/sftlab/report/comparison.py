"""Report sections 6 to 8: baseline vs fine-tuned, per-instruction results, example outputs.

Every comparison is made on the prompts a run shares with the baseline, from the per-prompt verdicts.
"""

from __future__ import annotations

from typing import Any

from sftlab.eval.ifeval import METRICS
from sftlab.experiment.typesplit import HELD_OUT, OTHER, TRAINED, TypeSplit, type_split
from sftlab.layout import IFEVAL_PLOT, RESULTS_LOOSE, RESULTS_STRICT
from sftlab.report.document import (
    SECTION_TITLES,
    TRIM_CHARS,
    Block,
    Bullets,
    Code,
    Image,
    P,
    Section,
    Table,
    plus_minus,
    signed,
    trim,
)
from sftlab.report.evals import (
    Comparison,
    EvalData,
    binomial_se,
    group_figures,
    instruction_deltas,
    noise_verdict,
    paired_figures,
)
from sftlab.report.plots import plot_ifeval
from sftlab.report.results import FIGURE_LABELS, pct
from sftlab.utils import plural

# ---- section 6 --------------------------------------------------------------------------------


def section_baseline(c: Comparison, images: dict[str, bytes], data: dict[str, Any]) -> Section:
    records, run_figs, base_figs, commons, best = c.records, c.run_figs, c.base_figs, c.commons, c.best
    blocks: list[Block] = []
    same = all(len(c) == len(commons[0]) for c in commons) and all(bf == base_figs[0] for bf in base_figs)
    n = base_figs[best]["n_prompts"]
    headers = ["figure", "baseline"]
    for r in records:
        headers += [f"`{r.name}`", "Δ"]
    table = []
    for k in METRICS:
        row = [FIGURE_LABELS[k], pct(base_figs[best][k])]
        for rf, bf in zip(run_figs, base_figs, strict=True):
            row += [pct(rf[k]), signed(rf[k] - bf[k])]
        table.append(row)
    blocks.append(P(f"IFEval accuracies in percent on {n} prompts ({base_figs[best]['n_instructions']} instructions), "
                    f"from the per-prompt verdicts in `{RESULTS_STRICT}` and `{RESULTS_LOOSE}`; "
                    f"Δ = fine-tuned minus baseline, in points."
                    + ("" if same else " Runs were scored on different prompt sets; each Δ uses the prompts that "
                                      "run shares with the baseline.")))
    blocks.append(Table(headers, table))
    se_lines = []
    deltas = []
    for r, ev, common, rf, bf in zip(records, c.evals, commons, run_figs, base_figs, strict=True):
        pf = paired_figures(c.base, ev, common)
        strict, loose = pf["prompt_level_strict_acc"], pf["prompt_level_loose_acc"]
        se_lines += [_se_line(r.name, "strict", strict), _se_line(r.name, "loose", loose)]
        deltas.append({"run": r.name, "delta_prompt_strict": strict["delta"], "paired_se": strict["paired_se"],
                       "won": strict["won"], "lost": strict["lost"], "delta_prompt_loose": loose["delta"],
                       "paired_se_loose": loose["paired_se"], "won_loose": loose["won"], "lost_loose": loose["lost"],
                       "paired": pf, "figures": rf, "baseline_figures": bf})
    blocks.append(Bullets(se_lines))
    images[IFEVAL_PLOT] = plot_ifeval(["baseline"] + [r.name for r in records], [base_figs[best]] + run_figs)
    blocks.append(Image(IFEVAL_PLOT, "The four IFEval figures, baseline and fine-tuned (percent)."))
    data["baseline_figures"] = base_figs[best]
    data["comparisons"] = deltas
    return Section(SECTION_TITLES[5], blocks)


def _se_line(run: str, kind: str, f: dict[str, Any]) -> str:
    """One run's prompt-level ``kind`` (strict or loose) change with its binomial and paired standard errors."""
    n = f["n"]
    return (f"`{run}`: prompt-level {kind} {pct(f['finetuned'])}% "
            f"(binomial standard error ±{100 * binomial_se(f['finetuned'], n):.1f}) "
            f"vs baseline {pct(f['baseline'])}% (±{100 * binomial_se(f['baseline'], n):.1f}); "
            f"Δ {signed(f['delta'])} points, paired standard error {plus_minus(f['paired_se'])}: "
            f"{noise_verdict(f['delta'], f['paired_se'])}. Prompts newly followed: {f['won']}; newly failed: "
            f"{f['lost']}.")


# ---- section 7 --------------------------------------------------------------------------------


def _instruction_table(rs: list[dict[str, Any]]) -> Block:
    return Table(["instruction", "n", "strict before", "strict after", "Δ strict", "loose before", "loose after",
                  "Δ loose"],
                 [[f"`{r['id']}`", r["n"], pct(r["strict_before"]), pct(r["strict_after"]),
                   signed(r["d_strict"]), pct(r["loose_before"]), pct(r["loose_after"]), signed(r["d_loose"])]
                  for r in rs])


def _names(rs: list[dict[str, Any]]) -> str:
    return ", ".join(f"`{r['id']}` ({signed(r['d_strict'], 0)} strict, n={r['n']})" for r in rs) or "none"


GROUP_TITLES = {TRAINED: "Trained types", HELD_OUT: "Held-out types", OTHER: "Other types (not used in training)"}


def group_line(group: str, g: dict[str, Any]) -> str:
    """The summary of one group of instruction types: size, strict and loose rates before and after."""
    s, lo = g["strict"], g["loose"]
    return (f"**{GROUP_TITLES[group]}** ({plural(g['types'], 'type')}, {plural(g['instructions'], 'instruction')} "
            f"on these prompts): strict {pct(s['baseline'])}% → {pct(s['finetuned'])}% (Δ {signed(s['delta'])} "
            f"points, paired standard error {plus_minus(s['paired_se'])}); "
            f"loose {pct(lo['baseline'])}% → {pct(lo['finetuned'])}% (Δ {signed(lo['delta'])}).")


def _grouped_blocks(c: Comparison, ids: list[dict[str, Any]], split: TypeSplit,
                    data: dict[str, Any]) -> list[Block]:
    """The per-id table split into trained, held-out and other types, each with its summary line."""
    groups = group_figures(c.base, c.evals[c.best], c.commons[c.best], split)
    blocks: list[Block] = [P(f"The run's config has an `augment:` block: training drew instructions of "
                             f"{plural(len(split.trained), 'type')} and held {len(split.held_out)} out (section 4 "
                             f"says how many conversations carry them). Instruction-level accuracy per group, "
                             f"pooled over its instructions:"),
                           Bullets([group_line(g, v) for g, v in groups.items()])]
    for g in groups:
        blocks += [P(f"{GROUP_TITLES[g]}, by instruction id:"),
                   _instruction_table([r for r in ids if split.group_of(r["id"]) == g])]
    for r in ids:
        r["group"] = split.group_of(r["id"])
    data["type_groups"] = {"trained": list(split.trained), "held_out": list(split.held_out), "groups": groups}
    return blocks


def section_per_instruction(c: Comparison, data: dict[str, Any]) -> Section:
    rec, base, ev, common = c.best_record, c.base, c.evals[c.best], c.commons[c.best]
    rows = instruction_deltas(base, ev, common)
    rows.sort(key=lambda x: (-x["d_strict"], -x["d_loose"], x["id"]))
    cats = [r for r in rows if r["id"].endswith(":*")]
    ids = [r for r in rows if not r["id"].endswith(":*")]
    improved = [r for r in ids if r["d_strict"] > 0 or (r["d_strict"] == 0 and r["d_loose"] > 0)]
    regressed = [r for r in ids if r["d_strict"] < 0 or (r["d_strict"] == 0 and r["d_loose"] < 0)]
    blocks = [
        P(f"Baseline vs the best run, `{rec.name}`, on {len(common)} prompts; instruction-level accuracy in percent "
          f"per category (the part of the id before the colon, shown as `category:*`) and per instruction id, "
          f"sorted by the change in strict accuracy. n is how many times the instruction occurs, so one prompt "
          f"moves an id with n occurrences by 100/n points."),
        Bullets([f"**Improved** ({len(improved)}): {_names(improved)}",
                 f"**Regressed** ({len(regressed)}): {_names(regressed)}",
                 f"Unchanged: {len(ids) - len(improved) - len(regressed)} instruction ids."]),
        P("By category:"), _instruction_table(cats),
    ]
    split = type_split(rec.config)
    if split is None:
        blocks += [P("By instruction id:"), _instruction_table(ids)]
    else:
        blocks += _grouped_blocks(c, ids, split, data)
    data["per_instruction"] = rows
    return Section(SECTION_TITLES[6], blocks)


# ---- section 8 --------------------------------------------------------------------------------


def _passed_list(res: dict[str, Any]) -> str:
    return ", ".join(f"{'✓' if ok else '✗'} `{iid}`" for iid, ok in
                     zip(res["instruction_id_list"], res["follow_instruction_list"], strict=True))


def _example_blocks(label: str, prompt: str, base: EvalData, ev: EvalData, run_name: str,
                    title: str = "IFEval") -> list[Block]:
    b, f = base.strict[prompt], ev.strict[prompt]
    key = base.keys.get(prompt) or ev.keys.get(prompt)
    return [
        P(f"**{label}**" + (f" ({title} key {key})" if key is not None else "") + ":"),
        Code(trim(prompt, 600)),
        P(f"Baseline ({sum(b['follow_instruction_list'])}/{len(b['follow_instruction_list'])} instructions "
          f"followed, strict): {_passed_list(b)}"),
        Code(trim(b.get("response", ""))),
        P(f"Fine-tuned `{run_name}` ({sum(f['follow_instruction_list'])}/{len(f['follow_instruction_list'])} "
          f"instructions followed, strict): {_passed_list(f)}"),
        Code(trim(f.get("response", ""))),
    ]


def choose_examples(base: EvalData, ev: EvalData, common: list[str], k: int = 3) -> dict[str, Any]:
    """Prompts where the fine-tuned model follows all instructions (strict) and the baseline does not.

    When there are none, the prompts where it follows the most additional instructions stand in
    (labelled as such). Ties go to prompts with more instructions, then to shorter prompts, so the
    choice is deterministic. One regression (the reverse case) is added when there is one.
    """
    def n_ok(res, p):
        return sum(bool(x) for x in res[p]["follow_instruction_list"])

    wins = [p for p in common if ev.strict[p]["follow_all_instructions"] and not base.strict[p]["follow_all_instructions"]]
    wins.sort(key=lambda p: (-len(ev.strict[p]["instruction_id_list"]), len(p), p))
    kind = "full"
    if not wins:
        kind = "partial"
        wins = [p for p in common if n_ok(ev.strict, p) > n_ok(base.strict, p)]
        wins.sort(key=lambda p: (-(n_ok(ev.strict, p) - n_ok(base.strict, p)), len(p), p))
    losses = [p for p in common if base.strict[p]["follow_all_instructions"] and not ev.strict[p]["follow_all_instructions"]]
    losses.sort(key=lambda p: (-len(base.strict[p]["instruction_id_list"]), len(p), p))
    return {"wins": wins[:k], "kind": kind, "regression": losses[:1], "n_wins": len(wins), "n_losses": len(losses)}


def section_examples(c: Comparison, data: dict[str, Any]) -> Section:
    rec, base, ev, common = c.best_record, c.base, c.evals[c.best], c.commons[c.best]
    ch = choose_examples(base, ev, common)
    blocks: list[Block] = []
    if ch["kind"] == "full" and ch["wins"]:
        blocks.append(P(f"{ch['n_wins']} of {len(common)} prompts are followed completely (strict) by `{rec.name}` "
                        f"and not by the baseline; {len(ch['wins'])} of them, chosen automatically (most "
                        f"instructions first), with both responses trimmed to {TRIM_CHARS} characters."))
    elif ch["wins"]:
        blocks.append(P(f"No prompt is followed completely by `{rec.name}` while the baseline fails it. Shown instead: "
                        f"{len(ch['wins'])} of the {ch['n_wins']} prompts where it follows more instructions than the "
                        f"baseline (largest gain first)."))
    else:
        blocks.append(P(f"On none of the {len(common)} prompts does `{rec.name}` follow more instructions than the "
                        f"baseline, so there is no improvement to show."))
    for i, p in enumerate(ch["wins"], 1):
        blocks += _example_blocks(f"Example {i}", p, base, ev, rec.name)
    if ch["regression"]:
        blocks.append(P(f"Regression ({ch['n_losses']} prompt(s) followed completely by the baseline but not by "
                        f"`{rec.name}`), the first by the same ordering:"))
        blocks += _example_blocks("Regression", ch["regression"][0], base, ev, rec.name)
    else:
        blocks.append(P("No regression: every prompt the baseline follows completely, the fine-tuned model follows too."))
    data["examples"] = {"wins": [base.keys.get(p) or p[:60] for p in ch["wins"]], "kind": ch["kind"],
                        "regression": [base.keys.get(p) or p[:60] for p in ch["regression"]]}
    return Section(SECTION_TITLES[7], blocks)

