"""The serving policy: from the ranker's scores to the page a user sees, with the probability of
every slot (its propensity), so the log can evaluate other policies offline (ope/).

- :mod:`policy.explore`: Thompson sampling for cold streams (a Beta–Bernoulli posterior per stream)
  in a share of the page's slots, the slot propensities by Monte Carlo;
- :mod:`policy.randomise`: a share of requests with the top-K order uniformly permuted (an
  unconfounded position curve, slot IPS weights);
- :mod:`policy.page`: the two together behind their switches (``PageConfig``).
"""
