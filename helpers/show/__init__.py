"""What is shown: live figures that gain a point per measurement, static charts of a results table, and control
panels whose errors show in the panel instead of killing the kernel.

- ``live``: live figures (``LivePlot``) with the speed of light drawn where it applies.
- ``charts``: static charts of a results table (bars, faceted bars, the Pareto front); log ticks in full.
- ``panels``: control panels (``ControlPanel``): toggles that run a measurement and plot it.
"""

from . import charts, live, panels
from .live import LivePlot
from .panels import ControlPanel

__all__ = ["charts", "live", "panels", "LivePlot", "ControlPanel"]
