"""Small builders shared by the tests: messages in sftlab's normalised ``role/content`` form."""

from __future__ import annotations


def U(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def A(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def S(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}
