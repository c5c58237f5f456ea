"""Analysis: where latency goes (per-op profiles), computational density, the Mobile Efficiency Score."""

from latvit.space.mes import DEFAULT_TERMS, MesTerm, mes

__all__ = ["DEFAULT_TERMS", "MesTerm", "mes"]
