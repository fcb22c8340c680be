"""`maskds tune`: hyperparameter search with Optuna over real training runs."""
