"""Policy documents: defaults, validation with clear errors."""

import pytest

from shunter.policies.document import DEFAULT_POLICY_YAML, parse_policy
from shunter.policies.errors import PolicyError
from shunter.policies.model import Priority


def test_empty_document_is_valid():
    doc = parse_policy("")
    assert doc.strategy == "least_loaded" and doc.mode == "enforce"


def test_default_document_parses():
    doc = parse_policy(DEFAULT_POLICY_YAML)
    assert set(doc.pools) == {"gpu_large", "gpu_small", "cpu"}
    assert doc.pool("cpu").cost_per_slot_s == 0.2


def test_full_document():
    doc = parse_policy("""
strategy: deadline
mode: shadow
shadow_strategy: adaptive
weights: {slack: 3}
sla: {critical: {deadline_s: 10}, low: {deadline_s: null}}
tenants: {acme: {budget_per_hour: 500}}
governance: [{tag: pii, pools: [cpu]}]
review: {tags: [needs-approval]}
retry: {max_attempts: 5}
""", version=7)
    assert doc.version == 7 and doc.mode == "shadow" and doc.shadow_strategy == "adaptive"
    assert doc.weights["slack"] == 3.0
    assert doc.deadline_s[Priority.CRITICAL] == 10 and doc.deadline_s[Priority.LOW] is None
    assert doc.tenant_budgets == {"acme": 500.0} and doc.max_attempts == 5


@pytest.mark.parametrize("text, message", [
    ("strategy: fastest", "unknown strategy 'fastest'"),
    ("mode: yolo", "mode must be one of"),
    ("stratgy: fifo", "unknown top-level key"),
    ("weights: {speed: 1}", "unknown key(s) in 'weights'"),
    ("weights: {load: -1}", "weights.load must be >= 0"),
    ("pools: {cpu: {speed: 0}}", "pools.cpu.speed must be > 0"),
    ("governance: [{pools: [cpu]}]", "governance[0]"),
    ("- a list", "mapping at the top level"),
    ("a: [", "not valid YAML"),
    ("headroom: {slots: -1}", "headroom.slots must be >= 0"),
    ("headroom: {slots: 1, for: urgent}", "headroom.for: unknown priority class 'urgent'"),
])
def test_invalid_documents_say_what_is_wrong(text, message):
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert message in str(err.value)
