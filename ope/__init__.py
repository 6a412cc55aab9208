"""Off-policy evaluation: the value of a target policy estimated from a log another policy wrote.

- :mod:`ope.data`: the bandit log (``BanditLog``) and its readers (Open Bandit Dataset files);
- :mod:`ope.estimators`: IPS, SNIPS, DM, DR and switch-DR per-round rewards, bootstrap CIs;
- :mod:`ope.regression`: the reward model q(x, a, position) of DM / DR, cross-fitted;
- :mod:`ope.thompson`: Bernoulli Thompson sampling's slate distribution (Monte Carlo);
- :mod:`ope.evaluate`: ``streamrank evaluate-ope``.
"""
