"""Report section 4: what the model was trained on, from the run's config and preprocessing statistics.

Why: an IFEval gain means something different when the training data itself carried IFEval-style
constraints; this section states plainly whether it did, with the counts behind the statement
(records read and kept, the split, augmented vs plain, per-type outcomes, decontamination), read
from the ``stats.json`` that ``sftlab train`` writes next to its resolved config. Runs written
before that file existed still render: the section says what is missing.
"""

from __future__ import annotations

from typing import Any

from sftlab.augment.checkers import PREFIX as OWN_PREFIX
from sftlab.augment.hygiene import REASONS
from sftlab.augment.stats import DROP_OVERLAP, decontaminated_against, describe_hygiene
from sftlab.data import describe_data
from sftlab.errors import SftlabError
from sftlab.experiment.typesplit import TypeSplit, type_split
from sftlab.layout import STATS, TRAIN_CONFIG, TrainDir
from sftlab.report.document import SECTION_TITLES, Block, Bullets, P, Section, Table
from sftlab.report.results import RunRecord, first
from sftlab.utils import plural, read_json


def read_stats(rec: RunRecord) -> tuple[dict[str, Any] | None, str]:
    """The run's preprocessing statistics, or None and why not."""
    path = TrainDir(rec.train_dir).stats
    if not path.is_file():
        return None, f"no `{STATS}` in `{rec.train_dir}`"
    try:
        stats = read_json(path)
    except SftlabError as e:
        return None, str(e)
    return (stats, "") if isinstance(stats, dict) else (None, f"`{path}` does not hold a mapping")


def _count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "n/a"


def _range(per_example: dict[str, int]) -> str:
    ns = sorted(int(k) for k, v in per_example.items() if v)
    if not ns:
        return "0"
    return str(ns[0]) if ns[0] == ns[-1] else f"{ns[0]}-{ns[-1]}"


def constraints_sentence(split: TypeSplit | None, stats: dict[str, Any] | None) -> str:
    """Whether the training data holds IFEval-style constraints, with the counts when they are known."""
    if split is None:
        return "The training data holds no added IFEval-style constraints (the run's config has no `augment:` block)."
    held = (f"{plural(len(split.held_out), 'type')} {'was' if len(split.held_out) == 1 else 'were'} held out of "
            f"training: " + ", ".join(f"`{t}`" for t in split.held_out) + "." if split.held_out
            else "No type was held out.")
    aug = (stats or {}).get("augment")
    if not isinstance(aug, dict):
        return (f"The run's config asks for IFEval-style constraints (an `augment:` block drawing from "
                f"{len(split.trained)} instruction types), but its preprocessing statistics are missing, so how "
                f"many training conversations carry them is not known. {held}")
    if not aug.get("augmented"):
        return ("The training data holds no added IFEval-style constraints: the config has an `augment:` block, "
                f"but none of the {_count(aug.get('written'))} conversations received instructions. {held}")
    emitted = [iid for iid, row in (aug.get("types") or {}).items() if row.get("emitted")]
    n_own = sum(iid.startswith(OWN_PREFIX) for iid in emitted)
    n_types = f"{len(emitted) - n_own} IFEval and {n_own} sftlab" if n_own else f"{len(emitted)} IFEval"
    text = (f"The training data holds IFEval-style constraints: {_count(aug['augmented'])} of the "
            f"{_count(aug.get('written'))} conversations augmentation wrote carry "
            f"{_range(aug.get('instructions_per_example') or {})} verifiable instructions of {n_types} "
            f"instruction types (of {len(split.trained)} drawn from), each checked by the IFEval scorer"
            + (" (sftlab's own types by sftlab's checkers)" if n_own else "")
            + f"; {_count(aug.get('plain'))} stayed plain. {held}")
    if aug.get("kept_augmented") is not None:
        text += (f" After preprocessing (over-long or empty conversations dropped) the training data holds "
                 f"{_count(aug['kept_augmented'])} augmented and {_count(aug.get('kept_plain'))} plain conversations.")
    elif sum((stats or {}).get("skipped", {}).values()):
        text += (f" Preprocessing then kept {_count(stats.get('kept'))} conversations in all (the statistics do not "
                 f"record how many of the kept ones are augmented).")
    return text + _replies_sentence((stats or {}).get("replies"))


def _replies_sentence(rep: Any) -> str:
    """Where the replies come from when the model wrote them itself (``augment.replies: model``)."""
    if not isinstance(rep, dict):
        return ""
    drops = "; ".join(f"{r} {_count(n)}" for r, n in sorted((rep.get("skipped") or {}).items()))
    return (f" The replies are the model's own: `{rep.get('model')}` answered {_count(rep.get('replaced'))} of "
            f"{_count(rep.get('conversations_in'))} prompts greedily (up to {rep.get('max_new_tokens')} new tokens) "
            f"before augmentation" + (f"; dropped: {drops}." if drops else "."))


def _sizes_rows(rec: RunRecord, stats: dict[str, Any] | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if stats is not None:
        rows += [["records read", _count(stats.get("records_read"))], ["kept", _count(stats.get("kept"))]]
        rows += [[f"skipped: {k}", _count(v)] for k, v in sorted((stats.get("skipped") or {}).items())]
        rows += [[f"turns dropped: {k}", _count(v)] for k, v in sorted((stats.get("dropped_turns") or {}).items())]
        aug = stats.get("augment")
        if isinstance(aug, dict) and aug.get("decontaminated"):
            rows.append([f"dropped by {decontaminated_against(aug.get('decontamination'))} decontamination",
                         _count(aug["decontaminated"])])
        if isinstance(aug, dict):
            rows += [[f"dropped by hygiene: {REASONS.get(k, k)}", _count(v)] for k, v in (aug.get("hygiene") or {}).items()]
    packed = " (packed sequences)" if rec.config.get("packing") else ""
    held = "`eval_data`" if rec.config.get("eval_data") else f"eval_fraction {rec.config.get('eval_fraction', 'n/a')}"
    rows.append([f"training split{packed}", _count(first(rec.summary, "num_train_examples"))])
    rows.append([f"held-out split ({held}){packed}", _count(first(rec.summary, "num_eval_examples"))])
    return rows


SWITCHES = ("preserve_content", "own_types", "binding")
"""Issue #24's construction switches the section names when they are on (hygiene and phrasing have their own words)."""


def _switches_on(cfg: dict[str, Any]) -> list[str]:
    on = [k for k in SWITCHES if cfg.get(k)]
    return on + ([f"phrasing {cfg['phrasing']}"] if cfg.get("phrasing", "v1") != "v1" else [])


def _augment_blocks(aug: dict[str, Any], split: TypeSplit) -> list[Block]:
    """Augmented vs plain counts, decontamination, and one row per instruction type."""
    cfg = aug.get("config") or {}
    per = aug.get("instructions_per_example") or {}
    overlap = sum(row.get("dropped", {}).get(DROP_OVERLAP, 0) for row in (aug.get("types") or {}).values())
    lines = [
        f"Augmentation (ratio {cfg.get('ratio', 'n/a')}, up to {cfg.get('max_instructions', 'n/a')} instructions, "
        f"seed {cfg.get('seed', 'n/a')}): {_count(aug.get('conversations_in'))} conversations in, "
        f"{_count(aug.get('augmented'))} augmented, {_count(aug.get('plain'))} plain "
        f"({_count(aug.get('chosen_plain'))} by the ratio, {_count(aug.get('kept_plain_after_failure'))} after every "
        f"attempt failed); instructions per augmented conversation: "
        + (", ".join(f"{k}: {v}" for k, v in sorted(per.items())) or "none") + "."
        + (f" Chatty openings (\"Sure, here's ...:\") removed from {_count(aug['openers_stripped'])} replies."
           if aug.get("openers_stripped") else ""),
        *([f"Hygiene ({', '.join(cfg.get('hygiene') or []) or 'rules n/a'}): "
           f"{_count(sum((aug.get('hygiene') or {}).values()))} conversations dropped before augmentation; "
           + describe_hygiene(aug["hygiene"]) + "."] if aug.get("hygiene") else []),
        *([f"Construction switches on: {', '.join(_switches_on(cfg))}."] if _switches_on(cfg) else []),
        f"Decontamination ({aug.get('decontamination', 'n/a')}; n = {cfg.get('ngram', 'n/a')} words): "
        f"{_count(aug.get('decontaminated'))} conversations dropped for an n-gram shared with an IFEval prompt; "
        f"{overlap} instructions dropped because their wording overlapped one.",
        f"Instruction types drawn from: {len(split.trained)}"
        + (f"; held out: {', '.join(f'`{t}`' for t in split.held_out)}" if split.held_out else "; none held out")
        + (f"; drawn with weights {', '.join(f'{k} {v:g}' for k, v in cfg['type_weights'].items())} (others 1)"
           if cfg.get("type_weights") else "; drawn uniformly")
        + ".",
    ]
    rows = []
    for iid, row in sorted((aug.get("types") or {}).items()):
        dropped = row.get("dropped") or {}
        reasons = "; ".join(f"{r} {n}" for r, n in dropped.items()) or "-"
        rows.append([f"`{iid}`", _count(row.get("attempted")), _count(row.get("emitted")),
                     _count(sum(dropped.values())), reasons])
    return [Bullets(lines), P("Instructions per type (attempted, emitted, dropped by reason):"),
            Table(["instruction type", "attempted", "emitted", "dropped", "dropped by reason"], rows)]


def run_data(rec: RunRecord) -> dict[str, Any]:
    """What the section shows for one run, as plain data (also written to ``report.json``)."""
    stats, why = read_stats(rec)
    split = type_split(rec.config) if rec.config else None
    aug = (stats or {}).get("augment") if stats else None
    return {"run": rec.name, "data": describe_data(rec.config.get("data")), "stats_missing": why or None,
            "records_read": (stats or {}).get("records_read"), "kept": (stats or {}).get("kept"),
            "skipped": (stats or {}).get("skipped"), "train": first(rec.summary, "num_train_examples"),
            "eval": first(rec.summary, "num_eval_examples"), "augment": aug if isinstance(aug, dict) else None,
            "trained_types": list(split.trained) if split else None,
            "held_out_types": list(split.held_out) if split else None,
            "sentence": constraints_sentence(split, stats), "_stats": stats, "_split": split}


def _overview_row(d: dict[str, Any]) -> list[str]:
    aug = d["augment"] or {}
    return [f"`{d['run']}`", f"`{d['data']}`", _count(d["records_read"]), _count(d["kept"]), _count(d["train"]),
            _count(d["eval"]), _count(aug.get("augmented")) if aug else "-", _count(aug.get("plain")) if aug else "-",
            str(len(d["held_out_types"])) if d["held_out_types"] is not None else "-"]


def _run_blocks(rec: RunRecord, d: dict[str, Any]) -> list[Block]:
    stats, split = d["_stats"], d["_split"]
    c = rec.config
    opts = [f"{k} {c[k]}" for k in ("max_samples", "max_rounds", "truncation", "system_prompt") if c.get(k) is not None]
    blocks: list[Block] = [P(f"Run `{rec.name}` trained on `{d['data']}`" + (f" ({', '.join(opts)})" if opts else "")
                             + f"; from its `{TRAIN_CONFIG}`" + (f" and `{STATS}`." if stats else "."))]
    if stats is None:
        blocks.append(P(f"Preprocessing statistics are missing: {d['stats_missing']}; only the split sizes are known."))
    sources = (stats or {}).get("sources")
    if isinstance(sources, list) and len(sources) > 1:
        blocks.append(Table(["source", "records read", "kept", "drawn"],
                            [[f"`{s.get('source')}`", _count(s.get("records_read")), _count(s.get("kept")),
                              _count(s.get("drawn"))] for s in sources]))
    blocks.append(Table(["sample", "conversations"], _sizes_rows(rec, stats)))
    if split is not None and isinstance(d["augment"], dict):
        blocks += _augment_blocks(d["augment"], split)
    blocks.append(P(f"**{d['sentence']}**"))
    return blocks


def section_data(records: list[RunRecord], best: int, data: dict[str, Any]) -> Section:
    """The data of the best run in full; with several runs, an overview row per run and whether they differ."""
    per = [run_data(r) for r in records]
    blocks: list[Block] = []
    if len(records) > 1:
        rows = [_overview_row(d)[1:] for d in per]
        same = all(r == rows[0] for r in rows) and all(d["augment"] == per[0]["augment"] for d in per)
        blocks.append(P(f"All {len(records)} runs trained on the same data (same source, counts and augmentation); "
                        f"shown once, for `{records[best].name}`." if same else
                        f"The runs' data differ; one row per run, then the details of the best run, "
                        f"`{records[best].name}`."))
        if not same:
            blocks.append(Table(["run", "data", "records read", "kept", "training split", "held-out split",
                                 "augmented", "plain", "held-out types"], [_overview_row(d) for d in per]))
    blocks += _run_blocks(records[best], per[best])
    data["data"] = [{k: v for k, v in d.items() if not k.startswith("_")} for d in per]
    return Section(SECTION_TITLES[3], blocks)
