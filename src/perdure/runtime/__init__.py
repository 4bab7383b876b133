"""The runtime: registries, the orchestration and work dispatchers, and their lifecycle."""

from perdure.runtime._activity import ActivityContext
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import ActivityRegistry, OrchestrationRegistry, Registry
from perdure.runtime._runtime import Runtime

__all__ = ["ActivityContext", "ActivityRegistry", "OrchestrationRegistry", "Registry", "Runtime", "RuntimeOptions"]
