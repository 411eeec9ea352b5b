"""IFEval/IFBench inputs' ``kwargs`` checked against the checker they are for, when the inputs are read.

A record whose kwargs name an argument the checker does not take (``TypeError: build_description()
got an unexpected keyword argument``) or hold a value it refuses (a ``relation`` that is neither
``less than`` nor ``at least``: ``ValueError``) used to fail only while scoring, as a traceback,
after every response was generated. Checked here, it is a one-line error naming the file, the line
and the field (``kwargs[1].relation``) before any work.
"""

from __future__ import annotations

import inspect
from typing import Any

from sftlab.errors import DataError


def _params(checker_cls: Any) -> tuple[set[str], bool]:
    """The keyword names ``build_description`` takes, and whether it takes any (``**kwargs``)."""
    sig = inspect.signature(checker_cls.build_description)
    names = {n for n, p in sig.parameters.items() if n != "self"
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def check_kwargs(spec: str, lineno: int, ids: list[str], kwargs: list[dict | None], registry: dict[str, Any]) -> None:
    """Every ``kwargs[i]`` fits the checker of ``ids[i]``: known argument names, and values its
    ``build_description`` accepts (tried once, seeded, so that no caller's random state moves)."""
    from sftlab.eval.scoring import seeded_checkers

    for i, (iid, kw) in enumerate(zip(ids, kwargs, strict=True)):
        given = {k: v for k, v in (kw or {}).items() if v is not None}
        cls = registry[iid]
        names, anything = _params(cls)
        for k in given:
            if not anything and k not in names:
                allowed = ", ".join(sorted(names)) or "none"
                raise DataError(spec, f"instruction '{iid}' takes no argument '{k}' (takes: {allowed})",
                                line=lineno, field=f"kwargs[{i}].{k}")
        try:
            with seeded_checkers(0):
                cls(iid).build_description(**given)
        except Exception as e:  # the checker's own refusal (ValueError), a wrong type (TypeError), ...
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(spec, f"instruction '{iid}' refuses its arguments: {text}", line=lineno,
                            field=f"kwargs[{i}]") from None
