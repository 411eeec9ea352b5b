"""Self-distilled replies: the model being fine-tuned answers each prompt itself, before augmentation.

Why: fine-tuning a small instruct model on another model's replies (ShareGPT's ChatGPT answers)
moves it toward that model's style as well as toward the constraints added by augmentation. On
SmolLM2-135M-Instruct that cost IFEval points the base model used to win by habit: its long answers
("at least N words"), its markdown ``*highlights*``, its answers without a chatty "Sure, here's ..."
opening (no commas). When the replies are its own greedy answers, the style stays what it was and
what is left to learn is what augmentation adds (the transforms, the instruction wording). Tulu 3
and AutoIF generate their verified replies with a model too; here the model is the student itself,
so no larger model is needed and it all runs offline.

What: for every conversation that is one user turn (optionally after a system message) and an
assistant reply, the reply is replaced by the model's greedy answer to the same messages, rendered
with the same chat template the training data uses. A conversation is dropped, and counted, when
its prompt leaves no room for ``max_new_tokens`` within ``max_length``, when the answer has not
ended within ``max_new_tokens`` (a cut answer would teach stopping mid-sentence), or when the answer
is empty; multi-turn conversations are dropped too (a reply to a conversation the model did not
hold would not be its own). Answers are cached under ``$SFTLAB_CACHE/replies`` in a resumable
``responses.jsonl`` keyed by the model's identity and the generation settings, so a rerun, a sweep
or a killed run generates each answer once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftlab import layout
from sftlab.augment.config import check_reply_max_new_tokens
from sftlab.utils import stable_hash

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

    from sftlab.data import LoadResult

SKIP_MULTI_TURN = "not a single user turn"
SKIP_PROMPT_TOO_LONG = "prompt leaves no room for the reply"
SKIP_UNFINISHED = "reply did not end within the token limit"
SKIP_EMPTY = "empty reply"


@dataclass
class ReplyStats:
    """What :func:`self_distill` did: conversations in and out, drops by reason, the generation."""

    conversations_in: int = 0
    replaced: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    generated: int = 0
    reused: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    model: str = ""
    max_new_tokens: int = 0
    cache: str = ""

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        drops = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])) or "none dropped"
        return (f"self-distilled replies ({self.model}, up to {self.max_new_tokens} new tokens): "
                f"{self.conversations_in} conversations in, {self.replaced} answered by the model ({drops}); "
                f"{self.generated} generated, {self.reused} reused from {self.cache}")


def single_turn_prompt(messages: list[dict[str, str]]) -> tuple[str, str | None] | None:
    """``(user text, system text or None)`` when ``messages`` is [system], user, assistant; else None."""
    roles = [m["role"] for m in messages]
    if roles == ["user", "assistant"]:
        return messages[0]["content"], None
    if roles == ["system", "user", "assistant"]:
        return messages[1]["content"], messages[0]["content"]
    return None


def model_identity(spec: str) -> dict[str, Any]:
    """What names a model's weights for the reply cache: the spec, where it resolves, and for local
    weights the size and modification time of each weight and config file (a retrained directory
    at the same path gets new answers)."""
    from sftlab.models.loading import resolve_model
    from sftlab.utils import file_fingerprint

    src = resolve_model(spec)
    ident: dict[str, Any] = {"spec": spec, "path_or_id": src.path_or_id, "gguf_file": src.gguf_file}
    if src.gguf_path is not None and src.gguf_path.exists():
        fp = file_fingerprint(src.gguf_path)
        ident["files"] = {src.gguf_path.name: {"size": fp["size"], "mtime_ns": fp["mtime_ns"]}}
    elif src.is_local:
        root = Path(src.path_or_id)
        ident["files"] = {p.name: {k: v for k, v in file_fingerprint(p).items() if k != "path"}
                          for p in sorted(root.iterdir())
                          if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name == "config.json")}
    return ident


def reply_settings(model_spec: str, tokenizer: Tokenizer, max_new_tokens: int, dtype: str = "auto") -> dict[str, Any]:
    """What decides the answers: the model's identity and the generation settings. It names the reply
    cache and goes into the preprocessing cache key, so new weights mean new answers."""
    from sftlab.eval.generate import resolve_dtype

    return {"model": model_identity(model_spec), "max_new_tokens": max_new_tokens, "dtype": resolve_dtype(dtype),
            "decoding": "greedy", "chat_template_hash": stable_hash(getattr(tokenizer, "chat_template", None) or "")}


def cache_file(settings: dict[str, Any]) -> Path:
    """``$SFTLAB_CACHE/replies/<key>/responses.jsonl`` for these :func:`reply_settings`."""
    from sftlab.models.gguf_cache import cache_root

    return cache_root() / layout.REPLIES_CACHE / stable_hash(settings, length=20) / layout.RESPONSES


def self_distill(loaded: LoadResult, model_spec: str, tokenizer: Tokenizer, *, max_length: int, max_new_tokens: int,
                 dtype: str = "auto", progress: bool = True) -> ReplyStats:
    """Replace the replies of ``loaded`` (a :class:`sftlab.data.LoadResult`) by ``model_spec``'s own
    greedy answers, in place; dropped conversations are removed and counted. Records the statistics
    under ``loaded.stats["replies"]`` and returns them."""
    from sftlab.eval.generate import GenerationConfig, encode_prompt, generate_responses, read_responses_file

    check_reply_max_new_tokens(max_new_tokens)
    stats = ReplyStats(conversations_in=len(loaded.conversations), model=model_spec, max_new_tokens=max_new_tokens)
    wanted: list[tuple[int, str, str | None]] = []  # (index, user text, system text)
    for i, messages in enumerate(loaded.conversations):
        turn = single_turn_prompt(messages)
        if turn is None:
            stats.skip(SKIP_MULTI_TURN)
        elif len(encode_prompt(tokenizer, turn[0], turn[1])) + max_new_tokens + 1 > max_length:
            stats.skip(SKIP_PROMPT_TOO_LONG)  # + 1: the end-of-turn token after the reply
        else:
            wanted.append((i, *turn))

    gen = GenerationConfig(max_new_tokens=max_new_tokens, dtype=dtype)
    settings = reply_settings(model_spec, tokenizer, max_new_tokens, dtype)
    path = cache_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats.cache = str(path.parent)
    answers: dict[tuple[str, str | None], str] = {}
    model = None  # loaded once, and only when some answer is not cached yet
    t0 = time.perf_counter()
    for system in dict.fromkeys(s for _, _, s in wanted):  # one generation call per system prompt
        prompts = [u for _, u, s in wanted if s == system]
        sys_path = path if system is None else path.with_name(f"responses-{stable_hash(system)}.jsonl")
        have = {r["prompt"] for r in read_responses_file(sys_path)}
        if model is None and any(p not in have for p in prompts):
            model = _load(model_spec, settings["dtype"])
        gen.system_prompt = system
        texts, gstats = generate_responses(model, tokenizer, prompts, gen, out_path=sys_path, progress=progress)
        stats.generated += gstats.n_generated
        stats.reused += gstats.n_reused
        stats.new_tokens += gstats.new_tokens
        answers.update({(p, system): t for p, t in zip(prompts, texts, strict=True)})
    del model
    stats.seconds = round(time.perf_counter() - t0, 2)

    keep: list[int] = []
    for i, user, system in wanted:
        text = answers[(user, system)]
        if not text.strip():
            stats.skip(SKIP_EMPTY)
        elif len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 1:
            stats.skip(SKIP_UNFINISHED)  # re-encoding may differ by a token from what was generated
        else:
            loaded.conversations[i] = [*loaded.conversations[i][:-1], {"role": "assistant", "content": text}]
            keep.append(i)
    stats.replaced = len(keep)
    loaded.conversations = [loaded.conversations[i] for i in keep]
    loaded.ids = [loaded.ids[i] for i in keep]
    loaded.stats["replies"] = stats.to_dict()
    return stats


def _load(model_spec: str, dtype: str) -> Any:
    """The model for generation, on the GPU when there is one (preprocessing runs before training's
    device placement)."""
    import torch

    from sftlab.models.loading import load_model

    model = load_model(model_spec, dtype=dtype)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model
