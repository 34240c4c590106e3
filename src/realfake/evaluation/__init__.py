"""Evaluation: the cross-fitted scores tested within bricks, the image statistics, the planted defects and the run's
capacity, the rule's power, the verdict and its figures."""
