"""Fixtures shared by several test modules: models built once per session (they are read-only in tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """(directory, model, processor) of a tiny random Qwen2.5-VL built in code (samr1.train.tiny_policy)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from samr1.train.tiny_policy import build_tiny_policy

    path = build_tiny_policy(tmp_path_factory.mktemp("policy"))
    return path, AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="session")
def shapes_engine():
    """A SamEngine on the shipped tiny-shapes SAM (CPU)."""
    from samr1.engine import SamEngine
    from samr1.sam import load_sam

    return SamEngine(load_sam("tiny-shapes"))
