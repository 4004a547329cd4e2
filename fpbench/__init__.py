"""fpbench: fixed-point (parallel-in-time) evaluation of RNNs, benchmarked across frameworks.

``import fpbench`` needs NumPy only; frameworks are imported when a backend is used.
"""

from .backend import Backend, BackendUnavailableError, Prepared, UnsupportedError
from .cells import CELLS, Cell
from .grad import GradResult, PassDiagnostics, default_cotangent, grad, timed_grad
from .lyapunov import lyapunov
from .memory import InsufficientMemoryError, estimate_grad_memory, estimate_memory
from .reference import exact_states as reference_states
from .reference import truncated_states
from .registry import (
    available_backends,
    backend_status,
    get_backend,
    selected_targets,
    solve,
    timed_solve,
)
from .result import DivergenceWarning, Result
from .sharding import ShardFailure, grad_sharded, solve_sharded
from .solvers import (
    ELK,
    Chunked,
    ChunkLayout,
    Iterative,
    Jacobi,
    Native,
    Newton,
    QuasiELK,
    QuasiNewton,
    Sequential,
    Solver,
    iteration_cap,
    make_solver,
)
from .spec import Problem, RNNSpec, make_problem
from .tasks import TASKS, MissingDependencyError
from .train import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "ELK",
    "TASKS",
    "Backend",
    "BackendUnavailableError",
    "Cell",
    "ChunkLayout",
    "Chunked",
    "DivergenceWarning",
    "GradResult",
    "InsufficientMemoryError",
    "Iterative",
    "Jacobi",
    "MissingDependencyError",
    "Native",
    "Newton",
    "PassDiagnostics",
    "Prepared",
    "Problem",
    "QuasiELK",
    "QuasiNewton",
    "RNNSpec",
    "Result",
    "Sequential",
    "ShardFailure",
    "Solver",
    "TrainResult",
    "UnsupportedError",
    "available_backends",
    "backend_status",
    "default_cotangent",
    "estimate_grad_memory",
    "estimate_memory",
    "get_backend",
    "grad",
    "grad_sharded",
    "iteration_cap",
    "lyapunov",
    "make_problem",
    "make_solver",
    "reference_states",
    "selected_targets",
    "solve",
    "solve_sharded",
    "timed_grad",
    "timed_solve",
    "train",
    "truncated_states",
]
