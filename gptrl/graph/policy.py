"""A bundle's policy graph with its metadata, built from numpy weights (no torch): what ``gptrl export`` verifies
against the torch runner and writes, and what ``gptrl web`` puts in a page."""

from __future__ import annotations

import onnx

from gptrl.bundle import Bundle
from gptrl.bundle.files import WEIGHTS_FILE
from gptrl.bundle.policy_graph import VARIANT_OPSETS, metadata_props
from gptrl.fileio import sha256_file
from gptrl.graph.causal import build_step_graph


def build_policy_graph(bundle: Bundle, variant: str, *, kv: int, bos_cache_mode: str,
                       version: str) -> onnx.ModelProto:
    """The step graph with its metadata (config, weights digest, ``version``, seal placeholder), checked by onnx.

    ``kv`` and ``bos_cache_mode`` are the serving settings already resolved (``gptrl.rollout.resolve_serving``); a
    stateful graph fixes them and records them in its metadata, the other variants take them at run time.
    """
    model = build_step_graph(bundle, variant, kv=kv, bos_cache_mode=bos_cache_mode)
    fixed = {"kv": kv, "bos_cache_mode": bos_cache_mode} if variant == "stateful" else {}
    onnx.helper.set_model_props(model, metadata_props(bundle.config, variant, sha256_file(bundle.path / WEIGHTS_FILE),
                                                      version, **fixed))
    model.doc_string = (f"gptrl single-step policy ({variant}, opset {VARIANT_OPSETS[variant]}) for "
                        f"{bundle.config.env_id or 'an unnamed env'}")
    onnx.checker.check_model(model, full_check=True)
    return model
