"""The cached preprocessing pipeline: load -> normalise -> mask -> Arrow cache, with statistics.

Features are cached under ``OUTPUT_DIR/cache/<key>/`` where ``key`` is a stable hash of
everything that can change them: the data (file paths, sizes and mtimes, or the source name),
the loading options, the tokenizer's full definition, the chat template text, the masking
strategy, lengths, the versions of sftlab, ``tokenizers`` and the cache format. A second run with
the same inputs loads the Arrow files instead of recomputing; any change gives a new key.

A cache directory is trusted only through its ``manifest.json``: it is written last, after the
Arrow files and ``stats.json``, and lists every file with its size and SHA-256. Builds happen in
a private temporary directory that is renamed into place, so a crash, a concurrent run or a
hand-edited file never yields a half-written cache; a directory whose manifest is missing,
unreadable, from another sftlab version or disagrees with the files is rebuilt.

Formats on disk are Arrow (``datasets.save_to_disk``) and JSON; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftlab import __version__
from sftlab.errors import ConfigError, DataError, check_choice
from sftlab.layout import CACHE, CACHE_DATA, CACHE_MANIFEST, STATS
from sftlab.prep.choices import MASKING_STRATEGIES, TRUNCATIONS
from sftlab.prep.masking_parts import IGNORE_INDEX
from sftlab.prep.special_text import SPECIAL_TEXT_CHOICES, drop_forged
from sftlab.prep.stats import format_stats  # noqa: F401  (part of this module's API)
from sftlab.prep.stats import percentiles as _percentiles
from sftlab.utils import atomic_write_json, file_table, stable_hash

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase as Tokenizer

    from sftlab.augment import AugmentConfig
    from sftlab.data import LoadResult
    from sftlab.train.config import TrainConfig

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
SKIP_NO_TRAINED = "no trained tokens after truncation"
SKIP_OVERLONG = "longer than max_length (truncation: drop)"
SKIP_OVERLONG_AUGMENTED = "augmented and longer than max_length (truncation: drop_augmented)"
_PARALLEL_MIN = 64  # below this many conversations, worker start-up costs more than it saves
#: Conversations per worker task, each encoded with one batched tokenizer call (the bench uses it too).
ENCODE_BATCH = 64


@dataclass
class PreprocessConfig:
    """Everything that decides the features (``num_proc`` only decides the speed)."""

    data: Any  # one source, or a list of data specs (a seeded mix)
    tokenizer: str
    chat_template: str | None = None
    conversation_field: str = "conversations"
    masking: str = "assistant"
    #: Masking controls (see :mod:`sftlab.prep.masking`); in the cache key only when not the default.
    train_on_eos: bool = True
    train_on_role_header: bool = True
    max_length: int = 2048
    truncation: str = "right"
    max_rounds: int | None = None
    max_samples: int | None = None
    sample_seed: int | None = None
    strict: bool = False
    num_proc: int = 2
    system_prompt: str | None = None
    #: A validated ``augment:`` block (:class:`sftlab.augment.AugmentConfig` as a mapping), or None.
    augment: dict | None = None
    #: The model being fine-tuned: it answers the prompts when ``augment.replies`` is ``model``.
    model: str | None = None
    #: Content holding special-token text: ``skip`` (counted) or ``keep`` (see sftlab.prep.special_text).
    special_text: str = "skip"

    @classmethod
    def from_train_config(cls, cfg: TrainConfig, sample_seed: int | None = None) -> PreprocessConfig:
        """The preprocessing a training config asks for (``cfg``: a :class:`sftlab.train.config.TrainConfig`)."""
        return cls(
            data=cfg.data, tokenizer=cfg.tokenizer or cfg.model, chat_template=cfg.chat_template,
            conversation_field=cfg.conversation_field, masking=cfg.masking, max_length=cfg.model_max_length,
            truncation=cfg.truncation, max_rounds=cfg.max_rounds, max_samples=cfg.max_samples,
            sample_seed=sample_seed, strict=cfg.strict, num_proc=cfg.num_proc, augment=cfg.augment,
            system_prompt=cfg.system_prompt, train_on_eos=getattr(cfg, "train_on_eos", True),
            train_on_role_header=getattr(cfg, "train_on_role_header", True), model=cfg.model,
            special_text=getattr(cfg, "special_text", "skip"),
        )

    def validate(self) -> None:
        """The one check of these settings, for ``sftlab preprocess`` and for a training config as it is
        read (:func:`sftlab.train.config.load_config`)."""
        check_choice("masking", self.masking, MASKING_STRATEGIES)
        for name in [n for n in ("train_on_eos", "train_on_role_header") if not isinstance(getattr(self, n), bool)]:
            raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_choice("special_text", self.special_text, SPECIAL_TEXT_CHOICES)
        check_choice("truncation", self.truncation, TRUNCATIONS)
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise ConfigError(f"max_length must be a positive integer, got {self.max_length!r}")
        for name in ("max_rounds", "max_samples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.num_proc, int) or self.num_proc < 1:
            raise ConfigError(f"num_proc must be a positive integer, got {self.num_proc!r}")
        if self.augment is not None and _augment_config(self).self_distills and not self.model:
            raise ConfigError("augment replies: model needs the model that answers (the config's 'model')")


@dataclass
class PreprocessResult:
    dataset: Dataset  # input_ids, labels, attention_mask (unpadded), id
    stats: dict
    cache_dir: Path
    cache_hit: bool


# --------------------------------------------------------------------------------------------
# Cache key and manifest
# --------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Tokenizer) -> dict[str, Any]:
    """A digest of the tokenizer's full definition and chat template.

    Fast tokenizers serialise their whole pipeline (vocabulary, merges, added tokens,
    normaliser, pre-tokeniser) with ``backend_tokenizer.to_str()``, which covers hub ids, local
    directories and GGUF files alike; slow ones fall back to their vocabulary.
    """
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:
        vocab = tokenizer.get_vocab()
        h.update(stable_hash(sorted(vocab.items()), length=64).encode())
    template = getattr(tokenizer, "chat_template", None) or ""
    return {
        "class": type(tokenizer).__name__,
        "definition_sha256": h.hexdigest(),
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "pad_token_id": getattr(tokenizer, "pad_token_id", None),
        "eos_token_id": getattr(tokenizer, "eos_token_id", None),
        "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
    }


def cache_key_inputs(cfg: PreprocessConfig, tokenizer: Tokenizer, data_fingerprint: dict | None = None) -> dict[str, Any]:
    """The JSON object whose hash names the cache; stored in the manifest for debugging."""
    import tokenizers

    from sftlab.augment.replies import reply_settings
    from sftlab.data import source_fingerprint

    aug = _augment_config(cfg)
    return {
        "cache_format": CACHE_FORMAT,
        "sftlab_version": __version__,
        "tokenizers_version": tokenizers.__version__,
        "data": data_fingerprint if data_fingerprint is not None else source_fingerprint(cfg.data),
        "conversation_field": cfg.conversation_field,
        "max_rounds": cfg.max_rounds,
        "max_samples": cfg.max_samples,
        "sample_seed": cfg.sample_seed if cfg.max_samples is not None else None,  # unused without max_samples
        "strict": cfg.strict,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "masking": cfg.masking,
        "max_length": cfg.max_length,
        "truncation": cfg.truncation,
        "special_text": cfg.special_text,
        # Only present when set, so that caches built without augmentation keep their keys.
        **({"augment": aug.cache_info()} if aug is not None else {}),
        # The answering model's identity: new weights mean new replies, so a new cache.
        **({"replies": reply_settings(str(cfg.model), tokenizer, aug.reply_max_new_tokens)}
           if aug is not None and aug.self_distills else {}),
        **({"system_prompt": cfg.system_prompt} if cfg.system_prompt is not None else {}),
        **{k: False for k in ("train_on_eos", "train_on_role_header") if getattr(cfg, k) is False},
    }


def _augment_config(cfg: PreprocessConfig) -> AugmentConfig | None:
    """The ``augment:`` block as an :class:`sftlab.augment.AugmentConfig`, or None without one."""
    from sftlab.augment import AugmentConfig

    return AugmentConfig.from_dict(cfg.augment) if cfg.augment is not None else None


def check_cache(cache_dir: Path, key: str) -> str | None:
    """``None`` when ``cache_dir`` holds a complete, matching cache; else why not."""
    import json

    mpath = cache_dir / CACHE_MANIFEST
    if not mpath.is_file():
        return "no manifest (interrupted or foreign build)"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"unreadable manifest ({e.__class__.__name__})"
    if not isinstance(manifest, dict):
        return "malformed manifest"
    if manifest.get("sftlab_version") != __version__:
        return f"built by sftlab {manifest.get('sftlab_version')}, this is {__version__}"
    if manifest.get("cache_format") != CACHE_FORMAT or manifest.get("key") != key:
        return "manifest does not match this configuration"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    try:
        actual = file_table(cache_dir, exclude=CACHE_MANIFEST)
    except OSError as e:
        return f"cannot read cache files ({e})"
    if actual != files:
        changed = sorted(set(actual) ^ set(files) | {k for k in files if k in actual and actual[k] != files[k]})
        return f"files differ from the manifest: {', '.join(changed[:3])}"
    return None


# --------------------------------------------------------------------------------------------
# Encoding (in worker processes)
# --------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer: Tokenizer, options: dict[str, Any]) -> None:
    # Sequences longer than the model's maximum are expected here (truncation comes after
    # masking); silence transformers' one-off "longer than the specified maximum" warning.
    flags = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(flags, dict):
        flags["sequence-length-is-longer-than-the-specified-maximum"] = True
    _WORKER["tokenizer"] = tokenizer
    _WORKER["options"] = options


def _encode_chunk(chunk: list[list[dict[str, str]]]) -> list[tuple[dict[str, list[int]], dict[str, Any]]]:
    from sftlab.prep.masking import encode_conversations_with_info

    tok, opts = _WORKER["tokenizer"], _WORKER["options"]
    return [(feats, asdict(info)) for feats, info in encode_conversations_with_info(chunk, tok, **opts)]


def _encode_all(
    conversations: list[list[dict[str, str]]], tokenizer: Tokenizer, options: dict[str, Any], num_proc: int, progress: bool
):
    """Yield ``(features, info)`` per conversation, in order, using ``num_proc`` worker processes."""
    from tqdm.auto import tqdm

    chunks = [conversations[i : i + ENCODE_BATCH] for i in range(0, len(conversations), ENCODE_BATCH)]
    bar = tqdm(total=len(conversations), desc="masking", unit="conv", disable=not progress, file=sys.stderr)
    try:
        if num_proc <= 1 or len(conversations) < _PARALLEL_MIN:
            _init_worker(tokenizer, options)
            for chunk in chunks:
                res = _encode_chunk(chunk)
                bar.update(len(res))
                yield from res
            return
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        with ctx.Pool(min(num_proc, len(chunks)), initializer=_init_worker, initargs=(tokenizer, options)) as pool:
            for res in pool.imap(_encode_chunk, chunks):
                bar.update(len(res))
                yield from res
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def _features(weighted: bool = False):
    from datasets import Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "input_ids": List(Value("int32")),
            "labels": List(Value("int32")),
            "attention_mask": List(Value("int8")),
            **({"weights": List(Value("float32"))} if weighted else {}),
        }
    )


def _with_weights(table: Any, weights: dict[int, list[float]]) -> Any:
    """The table plus a ``weights`` column for every row (1.0 on trained tokens where a row has none);
    only called when some conversation has message weights, so other data's cache is unchanged."""
    import pyarrow as pa

    labels = table.column("labels").to_pylist()
    col = [weights.get(r) or [0.0 if lab == IGNORE_INDEX else 1.0 for lab in row] for r, row in enumerate(labels)]
    return table.append_column("weights", pa.array(col, type=pa.list_(pa.float32())))


def _load(cfg: PreprocessConfig, tokenizer: Tokenizer, progress: bool) -> LoadResult:
    """Load and normalise the conversations (one source or a seeded mix), fit tool turns to the
    template, then augment them when the config asks for it."""
    from sftlab.data import fit_to_template, format_skips, load_conversations, load_mixture

    common = dict(conversation_field=cfg.conversation_field, max_samples=cfg.max_samples,
                  max_rounds=cfg.max_rounds, strict=cfg.strict)
    if cfg.system_prompt is None:
        loaded = load_conversations(cfg.data, sample_seed=cfg.sample_seed, **common)
    else:
        seed = cfg.sample_seed if (cfg.sample_seed is not None and cfg.max_samples is not None) else 0
        loaded = load_mixture(cfg.data, seed=seed, system_prompt=cfg.system_prompt, **common)
    loaded.conversations, folded = fit_to_template(loaded.conversations, tokenizer)
    drop_forged(loaded, tokenizer, mode=cfg.special_text, strict=cfg.strict, where=cfg.data)  # prep.special_text
    if folded:
        loaded.stats["folded_tool_turns"] = folded
        loaded.stats["notes"].append(f"the chat template has no tool role: {folded} tool turns folded into user turns")
    aug = _augment_config(cfg)
    if aug is not None and aug.self_distills and loaded.conversations:
        from sftlab.augment.replies import self_distill

        done = self_distill(loaded, str(cfg.model), tokenizer, max_length=cfg.max_length,
                            max_new_tokens=aug.reply_max_new_tokens, progress=progress)
        print(done.format(), file=sys.stderr, flush=True)
    if aug is not None and loaded.conversations:
        from sftlab.augment import augment_loaded

        augment_loaded(loaded, aug, progress=progress)
    if not loaded.conversations:
        raise DataError(cfg.data, f"no usable conversations ({format_skips(loaded.stats['skipped'])})")
    return loaded


@dataclass
class _Rows:
    """The encoded conversations kept so far, in Arrow tables, and what was counted on the way."""

    tables: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    full_lengths: list[int] = field(default_factory=list)
    kept_lengths: list[int] = field(default_factory=list)
    total_tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    fallbacks: int = 0
    encode_seconds: float = 0.0
    kept: int = 0  # rows already moved into ``tables``
    kept_augmented: int = 0  # kept rows that carry added instructions (an ``augment:`` config)
    weights: dict[int, list[float]] = field(default_factory=dict)  # row -> per-token weights, when any


def _skip(cfg: PreprocessConfig, rows: _Rows, cid: str, reason: str) -> None:
    if cfg.strict:
        raise DataError(cfg.data, f"conversation {cid}: {reason} ({cfg.truncation} truncation to {cfg.max_length} "
                                  f"tokens); --strict turns skipped records into errors")
    rows.skipped[reason] += 1


def encode_truncation(truncation: str) -> str:
    """The side the masking encoder cuts on: ``drop`` and ``drop_augmented`` encode like ``right``, then
    the rows to drop are dropped (and counted) here; anything reading features as preprocessing made
    them does the same."""
    return "right" if truncation in ("drop", "drop_augmented") else truncation


def overlong_skip(truncation: str, augmented: bool) -> str | None:
    """Why a conversation that did not fit is dropped, or None when it is kept cut.

    Why ``drop_augmented``: an augmented reply cut short no longer satisfies the instructions it was
    verified against, so it must go; a plain reply cut short is still honest text, and a long one
    cut without its end-of-turn token teaches that answers may run on, against the brevity that a
    set of only short conversations would teach.
    """
    if truncation == "drop":
        return SKIP_OVERLONG
    if truncation == "drop_augmented" and augmented:
        return SKIP_OVERLONG_AUGMENTED
    return None


def _encode_rows(cfg: PreprocessConfig, tokenizer: Tokenizer, loaded: LoadResult, progress: bool) -> _Rows:
    """Mask every conversation; keep the rows that have a target (and fit, under ``truncation: drop``;
    fit or are plain, under ``drop_augmented``)."""
    import pyarrow as pa

    options = {"strategy": cfg.masking, "max_length": cfg.max_length, "truncation": encode_truncation(cfg.truncation),
               "method": "fast", "train_on_eos": cfg.train_on_eos, "train_on_role_header": cfg.train_on_role_header}
    rows = _Rows(skipped=Counter(loaded.stats["skipped"]))
    cols: dict[str, list] = {"id": [], "input_ids": [], "labels": [], "attention_mask": []}
    t_enc = time.perf_counter()
    encoded = _encode_all(loaded.conversations, tokenizer, options, cfg.num_proc, progress)
    for cid, (feats, info) in zip(loaded.ids, encoded, strict=True):
        n_trained = sum(1 for x in feats["labels"] if x != IGNORE_INDEX)
        rows.fallbacks += info["fallback_boundaries"]
        why = overlong_skip(cfg.truncation, cid in loaded.augmented) if info["truncated"] else None
        if why:
            _skip(cfg, rows, cid, why)
            continue
        if n_trained == 0:
            _skip(cfg, rows, cid, SKIP_NO_TRAINED)
            continue
        rows.shapes[info["shape"]] += 1
        rows.kept_augmented += cid in loaded.augmented
        rows.full_lengths.append(info["full_length"])
        rows.kept_lengths.append(len(feats["input_ids"]))
        rows.truncated += int(info["truncated"])
        rows.total_tokens += len(feats["input_ids"])
        rows.trained_tokens += n_trained
        if "weights" in feats:
            rows.weights[rows.kept + len(cols["id"])] = feats["weights"]
        cols["id"].append(cid)
        for k in ("input_ids", "labels", "attention_mask"):
            cols[k].append(feats[k])
        if len(cols["id"]) >= 1024:  # keep memory flat: move finished rows into Arrow
            rows.tables.append(pa.Table.from_pydict(cols, schema=_features().arrow_schema))
            rows.kept += len(cols["id"])
            cols = {k: [] for k in cols}
    rows.encode_seconds = time.perf_counter() - t_enc
    if cols["id"] or not rows.tables:
        rows.tables.append(pa.Table.from_pydict(cols, schema=_features().arrow_schema))
    return rows


def _stats_record(cfg: PreprocessConfig, loaded: LoadResult, rows: _Rows, n_kept: int, t0: float) -> dict:
    enc_s = rows.encode_seconds
    stats = {
        "source": loaded.stats["source"],
        "records_read": loaded.stats["records_read"],
        "kept": n_kept,
        "skipped": dict(rows.skipped),
        "dropped_turns": loaded.stats["dropped_turns"],
        "notes": list(loaded.stats["notes"]),
        "single_turn": rows.shapes.get("single_turn", 0),
        "multi_turn": rows.shapes.get("multi_turn", 0),
        "total_tokens": rows.total_tokens,
        "trained_tokens": rows.trained_tokens,
        "trained_share": round(rows.trained_tokens / rows.total_tokens, 6) if rows.total_tokens else 0.0,
        "length": _percentiles(rows.full_lengths),
        "length_after_truncation": _percentiles(rows.kept_lengths),
        "truncated": rows.truncated,
        "fast_path_fallback_boundaries": rows.fallbacks,
        "masking": cfg.masking,
        "max_length": cfg.max_length,
        "truncation": cfg.truncation,
        "tokenizer": cfg.tokenizer,
        "chat_template": cfg.chat_template,
        "num_proc": cfg.num_proc,
        "encode_seconds": round(enc_s, 3),
        "conversations_per_second": round(len(loaded.conversations) / enc_s, 1) if enc_s > 0 else None,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    stats.update({k: False for k in ("train_on_eos", "train_on_role_header") if getattr(cfg, k) is False})
    stats.update({"weighted_conversations": len(rows.weights)} if rows.weights else {})
    for key in ("augment", "replies", "sources", "mix", "system_prompt_added", "folded_tool_turns", "repaired_surrogates"):
        if key in loaded.stats:
            stats[key] = loaded.stats[key]
    if "augment" in stats:  # what training sees, after the drops above
        stats["augment"] = {**stats["augment"], "kept_augmented": rows.kept_augmented,
                            "kept_plain": n_kept - rows.kept_augmented}
    if rows.fallbacks:
        stats["notes"].append(f"masking fast path fell back to the reference for {rows.fallbacks} message "
                              "boundaries (same output, slower)")
    return stats


def _build(cfg: PreprocessConfig, tokenizer: Tokenizer, build_dir: Path, progress: bool) -> dict:
    """Compute features and stats into ``build_dir`` (data/ + stats.json); returns stats."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    from sftlab.data import format_skips

    t0 = time.perf_counter()
    loaded = _load(cfg, tokenizer, progress)
    rows = _encode_rows(cfg, tokenizer, loaded, progress)
    n_kept = sum(t.num_rows for t in rows.tables)
    if n_kept == 0:
        raise DataError(cfg.data, f"no usable conversations ({format_skips(dict(rows.skipped))})")
    table = _with_weights(pa.concat_tables(rows.tables), rows.weights) if rows.weights else pa.concat_tables(rows.tables)
    ds = Dataset(InMemoryTable(table), info=DatasetInfo(features=_features(weighted=bool(rows.weights))))
    _save_quietly(ds, build_dir / CACHE_DATA, progress)
    stats = _stats_record(cfg, loaded, rows, n_kept, t0)
    atomic_write_json(build_dir / STATS, stats)
    return stats


def _save_quietly(ds: Dataset, path: Path, progress: bool) -> None:
    from datasets.utils import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    if not progress and was_enabled:
        disable_progress_bars()
    try:
        ds.save_to_disk(str(path))
    finally:
        if not progress and was_enabled:
            enable_progress_bars()


def _resolve_tokenizer(cfg: PreprocessConfig, tokenizer: Tokenizer | None) -> Tokenizer:
    from sftlab.models.loading import load_tokenizer, resolve_chat_template

    if tokenizer is None:
        return load_tokenizer(cfg.tokenizer, chat_template=cfg.chat_template)
    if cfg.chat_template is not None or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = resolve_chat_template(tokenizer, cfg.chat_template)
    return tokenizer


def _load_cached(cache_dir: Path):
    import json

    from datasets import load_from_disk

    ds = load_from_disk(str(cache_dir / CACHE_DATA))
    stats = json.loads((cache_dir / STATS).read_text(encoding="utf-8"))
    return ds, stats


def preprocess(
    cfg: PreprocessConfig, output_dir: str | Path, *, tokenizer: Tokenizer | None = None, progress: bool = True
) -> PreprocessResult:
    """Preprocess ``cfg.data`` into masked features, reusing ``output_dir``'s cache when it matches.

    A ``tokenizer`` passed in is used as is, except that ``cfg.chat_template`` (when set, or when
    the tokenizer has no template) is installed on it. Writes ``output_dir/stats.json``.
    """
    cfg.validate()
    from sftlab.data import source_fingerprint
    from sftlab.prep.build_guard import build_errors, check_template, install, remove_orphans
    from sftlab.train.validate import check_output_dir, check_system_prompt_tokens

    check_output_dir(output_dir)
    output_dir = Path(output_dir)
    data_fp = source_fingerprint(cfg.data)  # first: a missing path fails before the tokenizer loads
    tok = _resolve_tokenizer(cfg, tokenizer)
    check_template(tok, cfg.chat_template)
    check_system_prompt_tokens(cfg.system_prompt, tok, cfg.max_length)
    key_inputs = cache_key_inputs(cfg, tok, data_fp)
    key = stable_hash(key_inputs, length=20)
    cache_root = output_dir / CACHE
    cache_dir = cache_root / key

    stats: dict | None = None
    ds = None
    hit, why = False, None
    if cache_dir.exists():
        why = check_cache(cache_dir, key)
        if why is None:
            try:
                ds, stats = _load_cached(cache_dir)
                hit = True
            except Exception as e:  # corrupt Arrow or stats despite a manifest: rebuild
                why = f"cannot load ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if why is not None:
            logger.warning("preprocess cache %s is invalid: %s; rebuilding", cache_dir, why)
            print(f"sftlab preprocess: cache {cache_dir.name} is invalid ({why}); rebuilding", file=sys.stderr)
    if not hit:
        cache_root.mkdir(parents=True, exist_ok=True)
        remove_orphans(cache_root)
        build_dir = cache_root / f".build-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            build_dir.mkdir()
            with build_errors(build_dir):
                _build(cfg, tok, build_dir, progress)
            manifest = {
                "key": key,
                "cache_format": CACHE_FORMAT,
                "sftlab_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "inputs": key_inputs,
                "config": asdict(cfg),
                "files": file_table(build_dir, exclude=CACHE_MANIFEST),
            }
            with build_errors(build_dir):
                atomic_write_json(build_dir / CACHE_MANIFEST, manifest)  # last: marks the cache complete
            install(build_dir, cache_dir, key, replace=why is not None, is_valid=check_cache)
        finally:
            if build_dir.exists():
                shutil.rmtree(build_dir, ignore_errors=True)
        ds, stats = _load_cached(cache_dir)
    assert stats is not None and ds is not None
    stats = dict(stats)
    stats["cache_hit"] = hit
    stats["cache_dir"] = str(cache_dir)
    stats["cache_key"] = key
    atomic_write_json(output_dir / STATS, stats)
    return PreprocessResult(dataset=ds, stats=stats, cache_dir=cache_dir, cache_hit=hit)
