"""``ScaledLinear`` is River's ``StandardScaler | LinearRegression`` pipeline, composed by hand:
the same predictions, to the bit, over a stream of learning."""

import math
import random

from river import linear_model, optim, preprocessing

from shunter.policies.river_adapter import ScaledLinear


def test_scaled_linear_predicts_exactly_what_the_river_pipeline_predicts():
    rng = random.Random(7)
    ours = ScaledLinear()
    pipeline = preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.AdaGrad(0.1), intercept_lr=0.05, l2=0.0)
    pools = ("gpu_large", "gpu_small", "cpu")
    for _ in range(400):
        tokens = rng.randint(1, 8000)
        shared = {"type=llm": 1.0, "priority": float(rng.randint(0, 3)), "log_tokens": math.log1p(tokens)}
        variants = [{f"pool={p}": 1.0, "log_speed": math.log(s), f"log_tokens@{p}": shared["log_tokens"]}
                    for p, s in zip(pools, (2.5, 1.0, 0.2))]
        expected = [pipeline.predict_one({**shared, **v}) for v in variants]
        assert ours.predict_variants(shared, variants) == expected
        assert [ours.predict_one({**shared, **v}) for v in variants] == expected
        i = rng.randrange(3)
        x, y = {**shared, **variants[i]}, math.log(0.05 + tokens / 5000 * (1, 2.5, 12)[i]) + rng.gauss(0, 0.1)
        ours.learn_one(x, y)
        pipeline.learn_one(x, y)
    assert expected[0] != expected[2]  # it learned something pool-specific
