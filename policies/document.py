"""Policy documents: the YAML an operator writes, validated into a frozen ``PolicyDocument``.

Every field has a default, so an empty document is valid and means "least-loaded placement over
whatever pools report in". Unknown keys are errors (a typo must not silently do nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from shunter.policies.errors import PolicyError
from shunter.policies.model import Priority

MODES = ("enforce", "shadow", "review")


@dataclass(frozen=True)
class PoolSpec:
    """What the operator declares about a pool. Workers report their own slots and resources."""

    name: str
    cost_per_slot_s: float = 1.0
    speed: float = 1.0
    default_runtime_s: float = 1.0
    region: str = "local"
    realtime: bool = False


@dataclass(frozen=True)
class GovernanceRule:
    """Tasks carrying ``tag`` may run only in ``pools`` (if given) and ``regions`` (if given)."""

    tag: str
    pools: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyDocument:
    name: str = "default"
    version: int = 0
    strategy: str = "least_loaded"
    mode: str = "enforce"
    shadow_strategy: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    pools: Mapping[str, PoolSpec] = field(default_factory=dict)
    deadline_s: Mapping[Priority, float | None] = field(default_factory=dict)
    tenant_budgets: Mapping[str, float] = field(default_factory=dict)
    tenant_max_pending: Mapping[str, int] = field(default_factory=dict)
    max_pending: int = 100_000
    governance: tuple[GovernanceRule, ...] = ()
    review_tags: tuple[str, ...] = ()
    aging_s: float = 60.0
    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    unplaceable_timeout_s: float = 120.0
    on_infeasible: str = "run_late"
    """What the deadline strategy does with a task that cannot meet its deadline: run_late, reject, downgrade."""
    batch_max_size: int = 8
    batch_max_wait_s: float = 0.05
    breaker_failure_rate: float = 0.5
    breaker_window: int = 20
    breaker_cooldown_s: float = 30.0
    headroom_slots: int = 0
    """Free slots of the cell kept for work of ``headroom_priority`` or more urgent: less urgent
    tasks wait rather than take them, so urgent work starts without waiting for a slot to free
    (at the cost of that idle capacity while the cell is saturated). Never more than all but one
    of the cell's live slots."""
    headroom_priority: Priority = Priority.HIGH
    body_yaml: str = ""

    def pool(self, name: str) -> PoolSpec:
        return self.pools.get(name) or PoolSpec(name)

    def rules_for(self, tags: tuple[str, ...]) -> list[GovernanceRule]:
        return [r for r in self.governance if r.tag in tags]


_TOP_KEYS = {
    "name", "strategy", "mode", "shadow_strategy", "weights", "pools", "sla", "tenants", "governance",
    "review", "queue", "retry", "batching", "circuit_breaker", "headroom",
}


def _section(body: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = body.get(key) or {}
    if not isinstance(value, Mapping):
        raise PolicyError(f"'{key}' must be a mapping, got {type(value).__name__}.")
    unknown = set(value) - allowed
    if unknown:
        raise PolicyError(f"unknown key(s) in '{key}': {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}.")
    return dict(value)


def _positive(where: str, v: Any, allow_zero: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise PolicyError(f"{where} must be a number, got {v!r}.") from None
    if f < 0 or (f == 0 and not allow_zero):
        raise PolicyError(f"{where} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}.")
    return f


def parse_policy(text: str, version: int = 0) -> PolicyDocument:
    """Validate YAML text into a PolicyDocument; raise PolicyError naming the bad field."""
    from shunter.policies.strategies import STRATEGIES

    try:
        body = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy is not valid YAML: {exc}") from None
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise PolicyError("a policy document must be a YAML mapping at the top level.")
    unknown = set(body) - _TOP_KEYS
    if unknown:
        raise PolicyError(f"unknown top-level key(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_TOP_KEYS))}.")
    strategy = str(body.get("strategy", "least_loaded"))
    if strategy not in STRATEGIES:
        raise PolicyError(f"unknown strategy {strategy!r}; choose one of: {', '.join(sorted(STRATEGIES))}.")
    shadow = body.get("shadow_strategy")
    if body.get("mode") == "shadow" and shadow is None:
        shadow = "adaptive"
    if shadow is not None and shadow not in STRATEGIES:
        raise PolicyError(f"unknown shadow_strategy {shadow!r}; choose one of: {', '.join(sorted(STRATEGIES))}.")
    mode = str(body.get("mode", "enforce"))
    if mode not in MODES:
        raise PolicyError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")

    from shunter.policies.plugins import SCORE_PLUGINS

    weights = {}
    for k, v in _section(body, "weights", set(SCORE_PLUGINS)).items():
        weights[k] = _positive(f"weights.{k}", v, allow_zero=True)

    pools = {}
    raw_pools = body.get("pools") or {}
    if not isinstance(raw_pools, Mapping):
        raise PolicyError("'pools' must map pool names to their settings.")
    for pname, spec in raw_pools.items():
        spec = _section(raw_pools, pname, {"cost_per_slot_s", "speed", "default_runtime_s", "region", "realtime"})
        pools[str(pname)] = PoolSpec(
            name=str(pname),
            cost_per_slot_s=_positive(f"pools.{pname}.cost_per_slot_s", spec.get("cost_per_slot_s", 1.0), allow_zero=True),
            speed=_positive(f"pools.{pname}.speed", spec.get("speed", 1.0)),
            # Without a declared default, a task is assumed to take 1 s on a pool of speed 1.
            default_runtime_s=_positive(f"pools.{pname}.default_runtime_s",
                                        spec.get("default_runtime_s", 1.0 / float(spec.get("speed", 1.0) or 1.0))),
            region=str(spec.get("region", "local")),
            realtime=bool(spec.get("realtime", False)),
        )

    deadline_s: dict[Priority, float | None] = {}
    sla = _section(body, "sla", {p.label for p in Priority} | {"on_infeasible"})
    on_infeasible = str(sla.pop("on_infeasible", "run_late"))
    if on_infeasible not in ("run_late", "reject", "downgrade"):
        raise PolicyError(f"sla.on_infeasible must be run_late, reject or downgrade, got {on_infeasible!r}.")
    for cls_name, v in sla.items():
        sub = v if isinstance(v, Mapping) else {"deadline_s": v}
        d = sub.get("deadline_s")
        deadline_s[Priority.parse(cls_name)] = None if d is None else _positive(f"sla.{cls_name}.deadline_s", d)

    budgets, tenant_pending = {}, {}
    for tenant, v in (body.get("tenants") or {}).items():
        sub = v if isinstance(v, Mapping) else {"budget_per_hour": v}
        unknown_t = set(sub) - {"budget_per_hour", "max_pending"}
        if unknown_t:
            raise PolicyError(f"unknown key(s) in tenants.{tenant}: {', '.join(sorted(unknown_t))}; "
                              "allowed: budget_per_hour, max_pending.")
        if "budget_per_hour" in sub:
            budgets[str(tenant)] = _positive(f"tenants.{tenant}.budget_per_hour", sub["budget_per_hour"], allow_zero=True)
        if "max_pending" in sub:
            tenant_pending[str(tenant)] = int(_positive(f"tenants.{tenant}.max_pending", sub["max_pending"]))

    rules = []
    for i, rule in enumerate(body.get("governance") or []):
        if not isinstance(rule, Mapping) or "tag" not in rule:
            raise PolicyError(f"governance[{i}] must be a mapping with a 'tag' (and 'pools' and/or 'regions').")
        rules.append(GovernanceRule(str(rule["tag"]), tuple(rule.get("pools") or ()), tuple(rule.get("regions") or ())))

    review = _section(body, "review", {"tags"})
    queue = _section(body, "queue", {"aging_s", "unplaceable_timeout_s", "max_pending"})
    retry = _section(body, "retry", {"max_attempts", "backoff_base_s", "backoff_max_s"})
    batching = _section(body, "batching", {"max_size", "max_wait_s"})
    breaker = _section(body, "circuit_breaker", {"failure_rate", "window", "cooldown_s"})
    headroom = _section(body, "headroom", {"slots", "for"})
    try:
        headroom_priority = Priority.parse(str(headroom.get("for", "high")))
    except ValueError as exc:
        raise PolicyError(f"headroom.for: {exc}.") from None
    return PolicyDocument(
        name=str(body.get("name", "default")), version=version, strategy=strategy, mode=mode,
        shadow_strategy=shadow, weights=weights, pools=pools, deadline_s=deadline_s, tenant_budgets=budgets,
        tenant_max_pending=tenant_pending, max_pending=int(_positive("queue.max_pending", queue.get("max_pending", 100_000))),
        on_infeasible=on_infeasible, governance=tuple(rules), review_tags=tuple(review.get("tags") or ()),
        aging_s=_positive("queue.aging_s", queue.get("aging_s", 60.0)),
        unplaceable_timeout_s=_positive("queue.unplaceable_timeout_s", queue.get("unplaceable_timeout_s", 120.0)),
        max_attempts=int(_positive("retry.max_attempts", retry.get("max_attempts", 3))),
        backoff_base_s=_positive("retry.backoff_base_s", retry.get("backoff_base_s", 0.5), allow_zero=True),
        backoff_max_s=_positive("retry.backoff_max_s", retry.get("backoff_max_s", 30.0), allow_zero=True),
        batch_max_size=int(_positive("batching.max_size", batching.get("max_size", 8))),
        batch_max_wait_s=_positive("batching.max_wait_s", batching.get("max_wait_s", 0.05), allow_zero=True),
        breaker_failure_rate=_positive("circuit_breaker.failure_rate", breaker.get("failure_rate", 0.5)),
        breaker_window=int(_positive("circuit_breaker.window", breaker.get("window", 20))),
        breaker_cooldown_s=_positive("circuit_breaker.cooldown_s", breaker.get("cooldown_s", 30.0)),
        headroom_slots=int(_positive("headroom.slots", headroom.get("slots", 0), allow_zero=True)),
        headroom_priority=headroom_priority,
        body_yaml=text,
    )


DEFAULT_POLICY_YAML = """\
# Shunter's built-in policy: used until an operator applies one with `shunter policy apply`.
name: default
strategy: least_loaded
mode: enforce
pools:
  gpu_large: {cost_per_slot_s: 4.0, speed: 2.5, default_runtime_s: 0.4, realtime: true}
  gpu_small: {cost_per_slot_s: 1.0, speed: 1.0, default_runtime_s: 1.0, realtime: true}
  cpu:       {cost_per_slot_s: 0.2, speed: 0.2, default_runtime_s: 5.0}
queue: {aging_s: 60}
retry: {max_attempts: 3, backoff_base_s: 0.5, backoff_max_s: 30}
"""


def default_policy() -> PolicyDocument:
    return parse_policy(DEFAULT_POLICY_YAML, version=0)
