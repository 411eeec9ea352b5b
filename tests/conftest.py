"""Shared fixtures: the real SmolLM2 tokenizer from ../shared, a tiny random-init Llama on it,
offline settings, and a helper to run the CLI in a subprocess.

Shared assets are required, never skipped: a missing ../shared fails loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFTLAB_SHARED", REPO_ROOT.parent / "shared")).resolve()
TOKENIZER_DIR = SHARED / "tokenizers" / "SmolLM2-135M"
IFEVAL_DIR = SHARED / "ifeval"
IFBENCH_DIR = SHARED / "ifbench"
NLTK_DIR = SHARED / "nltk_data"

# Never touch the network from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NLTK_DATA", str(NLTK_DIR))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# Under pytest-xdist (`make test`: two workers) each worker and the CLI processes it starts compute on one
# thread: two workers of two threads each on two cores slow each other many times over. Set before any
# test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def _require(path: Path) -> Path:
    if not path.exists():
        raise RuntimeError(f"required shared asset missing: {path} (set SFTLAB_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session", autouse=True)
def gguf_cache_dir(tmp_path_factory):
    """GGUF conversions cached during the tests (CLI subprocesses included) go to a session directory,
    deleted afterwards, never to the user's ~/.cache."""
    root = tmp_path_factory.mktemp("sftlab-cache")
    before = os.environ.get("SFTLAB_CACHE")
    os.environ["SFTLAB_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("SFTLAB_CACHE", None)
    else:
        os.environ["SFTLAB_CACHE"] = before
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return _require(TOKENIZER_DIR)


@pytest.fixture(scope="session")
def ifeval_dir() -> Path:
    return _require(IFEVAL_DIR)


@pytest.fixture(scope="session")
def ifbench_dir() -> Path:
    return _require(IFBENCH_DIR)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The real SmolLM2-135M tokenizer with the built-in chatml template (it ships none)."""
    from sftlab.models.loading import load_tokenizer

    return load_tokenizer(str(tokenizer_dir), chat_template="chatml")


def make_tiny_llama(tokenizer_dir: Path, out_dir: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a tiny random-init Llama on the real SmolLM2 tokenizer (with chatml) to ``out_dir``."""
    from helpers import save_tiny_llama

    from sftlab.models.loading import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir), chat_template="chatml")
    return save_tiny_llama(tok, out_dir, seed=seed, hidden_size=hidden, intermediate_size=hidden * 2,
                           num_hidden_layers=layers)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return make_tiny_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m sftlab ARGS`` as a user would; returns the completed process (text mode)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sftlab", *args],
        cwd=cwd or REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
