"""Full-ranking evaluation: metric functions (metrics) and the one evaluator (evaluator)."""
