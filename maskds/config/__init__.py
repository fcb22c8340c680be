"""The run's config: one dataclass, its checks, and the fold plan (which models a run trains, validates and writes)."""
