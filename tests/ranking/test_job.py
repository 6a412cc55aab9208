"""ranking.job.randomised_curve: the fixed Biasnet curve the job reads off the randomised requests."""
import numpy as np

from store.sources.simulator import SimConfig, examination, simulate


def test_the_curve_from_randomised_requests_is_near_the_planted_one():
    from ranking.job import randomised_curve
    events = simulate(SimConfig(seed=3, n_users=300, n_streams=40, n_items=200, days=4, requests_per_day=800,
                                explore_rate=0.5)).events
    curve = np.array(randomised_curve(events))
    assert curve[0] == 1.0 and len(curve) == 10
    assert np.max(np.abs(curve - examination(np.arange(1, 11)))) < 0.1
    # without randomised requests there is nothing to read: None (the job harvests instead)
    assert randomised_curve(events[events["policy"] != "randomised"]) is None
