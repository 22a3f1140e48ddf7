"""Placement plugins: one module, one name, one factory each (DESIGN.md section 5).

``FILTER_PLUGINS`` and ``SCORE_PLUGINS`` map a plugin's name to its factory; strategies and policy
documents refer to plugins by these names only.
"""

from typing import Callable, Final

from shunter.policies.placement import FilterPlugin, ScorePlugin
from shunter.policies.plugins.affinity import Affinity
from shunter.policies.plugins.breaker import Breaker
from shunter.policies.plugins.budget import Budget
from shunter.policies.plugins.chance import Chance
from shunter.policies.plugins.completion import Completion
from shunter.policies.plugins.cost import Cost
from shunter.policies.plugins.fit import Fit
from shunter.policies.plugins.governance import Governance
from shunter.policies.plugins.latency_class import LatencyClass
from shunter.policies.plugins.liveness import Liveness
from shunter.policies.plugins.load import Load
from shunter.policies.plugins.reservation import Reservation
from shunter.policies.plugins.rotation import Rotation
from shunter.policies.plugins.slack import Slack

FILTER_PLUGINS: Final[dict[str, Callable[[], FilterPlugin]]] = {
    "liveness": Liveness,
    "fit": Fit,
    "governance": Governance,
    "breaker": Breaker,
    "budget": Budget,
    "reservation": Reservation,
}

SCORE_PLUGINS: Final[dict[str, Callable[[], ScorePlugin]]] = {
    "load": Load,
    "completion": Completion,
    "slack": Slack,
    "cost": Cost,
    "random": Chance,
    "round_robin": Rotation,
    "latency_class": LatencyClass,
    "affinity": Affinity,
}
