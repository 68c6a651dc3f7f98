"""The learning loop's pure parts: training set, evaluation gate, routing policy, monitoring."""
