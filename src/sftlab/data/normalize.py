"""Roles and the shape of a conversation: map speaker names, validate turns, pair them into rounds.

Every conversation that leaves :mod:`sftlab.data` has the same shape: an optional block of
leading system messages followed by complete rounds. A round is a user message, an assistant
message, and optionally more ``tool -> assistant`` steps (an assistant that called a tool,
the tool's output, the assistant's next message)::

    system* (user assistant (tool+ assistant)*)+

Tool turns (``tool``, ``function``, ``observation``, ``ipython``) carry what a tool returned.
The model never produces them, so they are never training targets (see
:func:`sftlab.prep.masking.apply_strategy`). LLaMA-Factory's ``function_call`` is the assistant
asking for a tool, so it is an assistant turn. For chat templates without a tool role,
:func:`fold_tool_turns` turns each run of tool turns into a user message.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from sftlab.errors import SftlabError
from sftlab.prep.masking_parts import message_flag_problem

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

#: Optional per-message keys kept through normalisation: ``train`` (bool) overrides the masking
#: strategy for that message, ``weight`` (number >= 0) scales its loss (see :mod:`sftlab.prep.masking`).
MESSAGE_FLAGS = ("train", "weight")

ROLE_ALIASES: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
    "system": "system",
}
"""Speaker names (compared case-insensitively) and the role each one becomes."""

# Reasons used in stats["skipped"] / stats["dropped_turns"]; kept as constants so tests and
# downstream summaries agree on the wording.
SKIP_NO_ROUND = "no complete user->assistant round"
SKIP_UNKNOWN_ROLES = "no complete round after dropping unknown roles"
DROP_LEADING = "leading non-user turn"
DROP_REPLACED_USER = "user turn without reply"
DROP_ORPHAN_ASSISTANT = "assistant turn without user"
DROP_LATE_SYSTEM = "system turn after the first user turn"
DROP_MAX_ROUNDS = "beyond max_rounds"
DROP_ORPHAN_TOOL = "tool turn without an assistant turn before it"
DROP_TOOL_NO_REPLY = "tool turn without an assistant turn after it"


class TurnError(Exception):
    """A malformed turn; ``field`` names it (``messages[3].content``)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def map_role(name: str) -> str | None:
    """The canonical role for a speaker name, or ``None`` when it has no alias."""
    return ROLE_ALIASES.get(name.strip().lower())


def _turn_content(turn: dict, content_key: str, where: str) -> str:
    content = turn.get(content_key)
    if content is None and turn.get("tool_calls"):
        # OpenAI assistant tool call without text: keep the call itself as the message.
        return json.dumps(turn["tool_calls"], ensure_ascii=False, sort_keys=True)
    if not isinstance(content, str):
        got = "missing" if content_key not in turn else type(content).__name__
        raise TurnError(f"{where}.{content_key}", f"content must be a string, got {got}")
    return content


def parse_turns(turns: Any, *, field_name: str = "conversations") -> tuple[list[dict[str, str]], Counter]:
    """Validate raw turns (OpenAI ``role``/``content`` or ShareGPT ``from``/``value``) and map their roles.

    Returns the mapped turns and a counter of dropped unknown roles (``"unknown role 'bing'"``).
    Raises :class:`TurnError` naming the offending field for malformed turns.
    """
    if not isinstance(turns, list):
        raise TurnError(field_name, f"conversation must be a list of turns, got {type(turns).__name__}")
    out: list[dict[str, str]] = []
    dropped: Counter = Counter()
    for j, turn in enumerate(turns):
        where = f"{field_name}[{j}]"
        if not isinstance(turn, dict):
            raise TurnError(where, f"turn must be an object, got {type(turn).__name__}")
        if turn.get("role") is not None:
            role_key, content_key = "role", "content"
        elif turn.get("from") is not None:
            role_key, content_key = "from", "value"
        else:
            raise TurnError(f"{where}.role", "turn has no role ('role' or 'from')")
        name = turn[role_key]
        if not isinstance(name, str):
            raise TurnError(f"{where}.{role_key}", f"role must be a string, got {type(name).__name__}")
        content = _turn_content(turn, content_key, where)
        role = map_role(name)
        if role is None:
            dropped[f"unknown role '{name}'"] += 1
            continue
        out.append({"role": role, "content": content, **_flags(turn, where)})
    return out, dropped


def _flags(turn: dict, where: str) -> dict[str, Any]:
    """The turn's valid ``train``/``weight`` keys (absent or null: none); a bad value is a TurnError."""
    flags = {k: turn[k] for k in MESSAGE_FLAGS if turn.get(k) is not None}
    if flags:
        problem = message_flag_problem(flags)
        if problem:
            key = "train" if problem.startswith("'train'") else "weight"
            raise TurnError(f"{where}.{key}", problem)
    return flags


def _message(turn: dict[str, Any], role: str | None = None, content: str | None = None) -> dict[str, Any]:
    """A normalised message: role, content and the turn's flags (nothing else)."""
    msg: dict[str, Any] = {"role": role or turn["role"], "content": turn["content"] if content is None else content}
    msg.update({k: turn[k] for k in MESSAGE_FLAGS if k in turn})
    return msg


def _pair_rounds(turns: list[dict[str, str]], dropped: Counter) -> list[list[dict[str, str]]]:
    """Rounds ``user assistant (tool+ assistant)*`` from turns after the leading system block."""
    rounds: list[list[dict[str, str]]] = []
    pending: dict[str, str] | None = None  # a user turn waiting for its reply
    tools: list[dict[str, str]] = []  # tool turns after the last round's assistant, waiting for the next one
    for turn in turns:
        role, msg = turn["role"], _message(turn)
        if role == "user":
            dropped[DROP_TOOL_NO_REPLY] += len(tools)
            tools = []
            if pending is not None:
                dropped[DROP_REPLACED_USER] += 1
            pending = msg
        elif role == "assistant":
            if pending is not None:
                rounds.append([pending, msg])
                pending = None
            elif tools:
                rounds[-1].extend([*tools, msg])
                tools = []
            else:
                dropped[DROP_ORPHAN_ASSISTANT] += 1
        elif role == "tool":
            if pending is None and rounds:
                tools.append(msg)
            else:
                dropped[DROP_ORPHAN_TOOL] += 1
        else:  # system in the middle of the conversation
            dropped[DROP_LATE_SYSTEM] += 1
    if pending is not None:
        dropped[DROP_REPLACED_USER] += 1
    dropped[DROP_TOOL_NO_REPLY] += len(tools)
    return rounds


def normalize_turns(
    turns: list[dict[str, str]], *, max_rounds: int | None = None
) -> tuple[list[dict[str, str]] | None, Counter]:
    """Normalise mapped turns; returns ``(messages or None, dropped-turn counter)``.

    Leading turns that are neither system nor user are dropped, leading system turns are kept,
    then rounds are paired: a later user turn replaces a pending one, an assistant turn with no
    pending user is dropped, tool turns are kept only between two assistant turns of a round
    (``assistant -> tool -> assistant``). ``max_rounds`` keeps the first N rounds. ``None`` means
    no complete round was found. A system turn after the leading block has no place in a round,
    so it is dropped (and counted).
    """
    if max_rounds is not None and max_rounds < 1:
        raise SftlabError(f"max_rounds must be at least 1, got {max_rounds}")
    dropped: Counter = Counter()
    i = 0
    while i < len(turns) and turns[i]["role"] not in ("system", "user"):
        dropped[DROP_LEADING] += 1
        i += 1
    systems: list[dict[str, str]] = []
    while i < len(turns) and turns[i]["role"] == "system":
        systems.append(_message(turns[i]))
        i += 1
    rounds = _pair_rounds(turns[i:], dropped)
    if max_rounds is not None and len(rounds) > max_rounds:
        dropped[DROP_MAX_ROUNDS] += sum(len(r) for r in rounds[max_rounds:])
        rounds = rounds[:max_rounds]
    dropped = Counter({k: v for k, v in dropped.items() if v})
    if not rounds:
        return None, dropped
    messages = list(systems)
    for r in rounds:
        messages.extend(r)
    return messages, dropped


def normalize_messages(turns: list[dict], *, max_rounds: int | None = None) -> list[dict[str, str]] | None:
    """Normalise raw turns (either format, any alias) into the shape described in the module docstring.

    Unknown roles are dropped. Returns ``None`` when no complete user -> assistant round remains.
    Raises :class:`SftlabError` for malformed turns.
    """
    try:
        mapped, _ = parse_turns(turns, field_name="messages")
    except TurnError as e:
        raise SftlabError(f"field '{e.field}': {e.message}") from None
    messages, _ = normalize_turns(mapped, max_rounds=max_rounds)
    return messages


def conversation_shape(messages: list[dict[str, str]]) -> str:
    """``"single_turn"`` for exactly one user, one assistant and at most one system message; else ``"multi_turn"``."""
    roles = Counter(m["role"] for m in messages)
    single = (
        roles.get("user", 0) == 1
        and roles.get("assistant", 0) == 1
        and roles.get("system", 0) <= 1
        and sum(roles.values()) == roles.get("user", 0) + roles.get("assistant", 0) + roles.get("system", 0)
    )
    return "single_turn" if single else "multi_turn"


def with_system_prompt(messages: list[dict[str, str]], text: str | None) -> list[dict[str, str]]:
    """``messages`` with a system message ``text`` in front when it has none (else unchanged)."""
    if not text or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": text}, *messages]


def fold_tool_turns(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """Replace tool turns by user turns, for chat templates without a tool role.

    Each tool turn goes into the next user turn (its content first, a blank line between);
    when an assistant turn comes first, a user turn holding the tool output is inserted before
    it. Returns the new messages and the number of tool turns folded.
    """
    out: list[dict[str, str]] = []
    held: list[str] = []
    folded = 0
    for m in messages:
        if m["role"] == "tool":
            held.append(m["content"])
            folded += 1
            continue
        if held and m["role"] == "user":
            out.append(_message(m, content="\n\n".join([*held, m["content"]])))
            held = []
            continue
        if held:
            out.append({"role": "user", "content": "\n\n".join(held)})
            held = []
        out.append(_message(m))
    if held:
        out.append({"role": "user", "content": "\n\n".join(held)})
    return out, folded


_PROBE = "sftlab-tool-probe-5d1c"
_tool_role_cache: dict[str, bool] = {}


def template_has_tool_role(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a ``tool`` message (probed once per template).

    A template has none when rendering ``user, assistant, tool, assistant`` raises (templates
    that insist on alternating user/assistant) or leaves the tool's text out.
    """
    template = getattr(tokenizer, "chat_template", None) or ""
    if template in _tool_role_cache:
        return _tool_role_cache[template]
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
             {"role": "tool", "content": _PROBE}, {"role": "assistant", "content": "b"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
        ok = isinstance(text, str) and _PROBE in text
    except Exception:  # jinja2 TemplateError, raise_exception(...) in the template, ...
        ok = False
    _tool_role_cache[template] = ok
    return ok


def fit_to_template(conversations: list[list[dict[str, str]]], tokenizer: Tokenizer) -> tuple[list[list[dict[str, str]]], int]:
    """Conversations ready for ``tokenizer``'s template: tool turns folded when it has no tool role.

    Returns the conversations (the same list when nothing changes) and the number of folded
    tool turns (``stats["folded_tool_turns"]``).
    """
    if not any(m["role"] == "tool" for conv in conversations for m in conv):
        return conversations, 0
    if template_has_tool_role(tokenizer):
        return conversations, 0
    out, total = [], 0
    for conv in conversations:
        folded, n = fold_tool_turns(conv)
        out.append(folded)
        total += n
    return out, total
