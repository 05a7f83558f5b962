"""S2DNAS's NAS half (paper §3.3): a search over split points and concat indicators of an S2DNAS
transformation of one static checkpoint. A PPO controller (stable-baselines3) or a random-search
baseline proposes candidates; each is trained for a short while from the inherited weights
(through the same training loop as ``tinydyn train``) on a Ray worker, its per-stage thresholds
chosen on held-out training images, and scored by the reward ACC x COST^omega.

Modules: :mod:`.space` (the action space and its decoding), :mod:`.candidate` (training and
scoring one candidate, torch), :mod:`.controller` (PPO over a Ray-backed vector environment,
and the random baseline), :mod:`.runner` (state file, JSON-lines log, progress, resume, Ray
start and stop), :mod:`.pareto` (the accuracy-cost plot).
"""
