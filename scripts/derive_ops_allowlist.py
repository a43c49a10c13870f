#!/usr/bin/env python
"""Writes ``mlflow_eas_savedmodel/graph/ops_allowlist.txt``: the ops policy's allowlist.

Applies :func:`mlflow_eas_savedmodel.graph.ops_policy.derive_allowlist` (the rule is in that
module's docstring and docs/security.md) to the op registries the package carries (TF 1.12-2.7,
``mlflow_eas_savedmodel/runtimes/registries/``) and to the installed TensorFlow's (2.21), with
the op families read from TF 2.21's generated wrapper modules.
``tests/security/test_ops_allowlist.py`` re-derives it and compares.

Usage::

    .venv/bin/python scripts/derive_ops_allowlist.py   # rewrites the file in place
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

HEADER = """\
# The ops policy's allowlist (mlflow_eas_savedmodel/graph/ops_policy.py, docs/security.md).
# Written by scripts/derive_ops_allowlist.py; tests/security/test_ops_allowlist.py re-derives it and
# compares. Do not edit by hand: change the rule (ALLOWED_FAMILIES, REFUSED_FAMILIES,
# HAND_ALLOWED, HAND_REFUSED in ops_policy.py) and run the script again.
#
# Rule: family = the TF 2.21 generated wrapper module holding the op (gen_math_ops -> math;
# '-' for an op no wrapper holds, or one only the old registries TF 1.12-2.7 have). An op is
# allowed when it is HAND_ALLOWED, or its family is in ALLOWED_FAMILIES and it is none of:
# HAND_REFUSED, a file/network op (FILE_OPS rule), a Python op, a *Dataset*/*Iterator* op, a
# data_flow op that blocks or keeps state between sessions (queues, barriers, accumulators,
# staging areas, session handles). Everything else is refused.
#
# Ops covered: every op of tf-1.12, 1.14, 1.15, 2.3, 2.4, 2.7 (runtimes/registries) and TF {tf}.
# Columns: verdict op family
"""


def derive():
    import dump_op_registry

    from mlflow_eas_savedmodel import runtimes
    from mlflow_eas_savedmodel.graph import ops_policy

    current = dump_op_registry.dump()
    registries = [runtimes.load_registry(v)["ops"] for v in runtimes.RUNTIME_VERSIONS]
    verdicts = ops_policy.derive_allowlist(registries, current["ops"], ops_policy.read_op_families())
    lines = [f"{verdict} {name} {family}" for name, (verdict, family) in sorted(verdicts.items())]
    return HEADER.replace("{tf}", current["tensorflow"]) + "\n".join(lines) + "\n"


if __name__ == "__main__":
    from mlflow_eas_savedmodel.graph import ops_policy

    text = derive()
    with open(ops_policy.ALLOWLIST_FILE, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {ops_policy.ALLOWLIST_FILE}: {text.count(chr(10) + 'allow ')} allowed, "
          f"{text.count(chr(10) + 'refuse ')} refused")
