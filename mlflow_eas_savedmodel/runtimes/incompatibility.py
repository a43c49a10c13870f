"""What the static check (:mod:`.static_check`) and the semantic rules (:mod:`.semantic`) report.

Its own module so that the two checks need not import each other: the static check runs the
rules, and the rules only build these.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Incompatibility:
    """Why one node cannot run in one runtime."""

    runtime: str
    node: str
    op: str
    reason: str
    function: str = None

    def __str__(self):
        where = f"node {self.node!r}" + (f" in function {self.function!r}" if self.function else "")
        return f"TF {self.runtime}: {where} ({self.op}): {self.reason}"
