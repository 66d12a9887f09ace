"""Local stand-ins for ВИМИС, ИЭМК, ФСС and ТФОМС, served together by one host (simulators.server).

A simulator is a module of this package that builds a blueprint and calls `register_simulator`;
the host finds it by itself.
"""

from simulators.server import (
    SIMULATORS,
    behaviour,
    create_simulators_app,
    load_simulators,
    register_simulator,
    start_simulators,
    storage,
)

__all__ = [
    "SIMULATORS",
    "behaviour",
    "create_simulators_app",
    "load_simulators",
    "register_simulator",
    "start_simulators",
    "storage",
]
