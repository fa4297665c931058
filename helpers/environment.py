"""The environment report and each chapter's set-up: what this machine is, what runs on it, its speed of light,
and the sizes a chapter uses here (notebook 00 explains the report).

A notebook's set-up is ``ch = environment.chapter("05", globals())``: the parameters its parameters cell names
(``None``: the profile's value, filled in), everything else from the hardware profile's table for that
chapter. Every capability in the report comes from running a tiny instance of it here (``probes``).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from . import variants
from .errors import WorkbookError
from .machine import profiles
from .machine.hardware import DeviceInfo, device, device_info, host_info, versions
from .machine.probes import attention_support, flash_path, quantization_support
from .machine.profiles import Profile
from .measure.ceilings import SpeedOfLight, speed_of_light
from .measure.protocol import Protocol
from .models import catalog


@dataclass
class EnvironmentReport:
    """Everything the numbers depend on. ``to_frame()`` for a table; fields for code."""

    device: DeviceInfo
    versions: dict
    attention: pd.DataFrame
    quantization: pd.DataFrame
    speed_of_light: SpeedOfLight
    host: dict = field(default_factory=host_info)  # CPU model and cores, driver, clocks at start

    def to_frame(self) -> pd.DataFrame:
        rows = {f"device.{k}": v for k, v in asdict(self.device).items()}
        rows.update({f"host.{k}": v for k, v in self.host.items()})
        rows.update({f"version.{k}": v for k, v in self.versions.items()})
        sol = self.speed_of_light
        rows.update(
            {
                "sol.peak_tflops": sol.peak_tflops,
                "sol.bandwidth_gbs": sol.bandwidth_gbs,
                "sol.measured_tflops": sol.measured_tflops,
                "sol.measured_gbs": sol.measured_gbs,
                "sol.source": sol.source,
            }
        )
        return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))

    def runs(self, attention: str | None = None, quant: str | None = None) -> bool:
        """``report.runs(attention="sdpa-flash")`` / ``report.runs(quant="nf4")``."""
        if attention:
            variants.attention_variant(attention)  # an unknown name gets the list of names
            return bool(self.attention.set_index("attention").loc[attention, "runs_here"])
        if quant not in variants.QUANT_MODES[1:]:
            raise WorkbookError(
                f"Unknown quantization {quant!r}.", f"Use one of {list(variants.QUANT_MODES[1:])}."
            )
        return bool(self.quantization.set_index("quant").loc[quant, "runs_here"])


def report(measure: bool = False) -> EnvironmentReport:
    """Probe this machine: device, versions, attention paths, quantization modes, speed of light."""
    return EnvironmentReport(
        device_info(),
        versions(),
        attention_support(),
        quantization_support(),
        speed_of_light(measure=measure),
    )


# --------------------------------------------------------------------------- a chapter's set-up

SHARED = (  # the sizes every chapter has (the profile's fields), beside its own table's
    "decoder small_decoder dtype half seq_lens batch_sizes long_seq new_tokens decoders memory_seq_lens short_seq"
).split()
REPORT_ROWS = (  # the report lines a chapter shows at its top
    "device.name device.memory_gib host.cpu_model host.driver_version host.sm_clock_mhz version.torch "
    "version.transformers version.bitsandbytes version.peft version.flash-attn sol.measured_tflops sol.measured_gbs"
).split()


@dataclass
class Chapter:
    """What a chapter needs, decided once: the report, the profile, the sizes, the flash path.

    ``ch.sizes`` holds every size by name and ``ch.<name>`` reads one (``ch.prompts``, ``ch.model``);
    ``ch.take("model", "prompts")`` returns several at once for the notebook's variables.
    """

    number: str
    env: EnvironmentReport
    profile: Profile
    sizes: dict = field(default_factory=dict)

    def __getattr__(self, name):
        sizes = self.__dict__.get("sizes", {})
        if name in sizes:
            return sizes[name]
        raise AttributeError(
            f"chapter {self.__dict__.get('number')} has no size {name!r} (sizes: {sorted(sizes)})"
        )

    def take(self, *names: str) -> tuple:
        """Several sizes at once, in the order asked: ``MODEL, PROMPTS = ch.take("model", "prompts")``."""
        missing = [n for n in names if n not in self.sizes]
        if missing:
            raise WorkbookError(
                f"Chapter {self.number} has no size {missing}.", f"Use names from {sorted(self.sizes)}."
            )
        return tuple(self.sizes[n] for n in names)

    @property
    def gpu(self) -> bool:
        """Whether this machine measures on a GPU (capability, not size: sizes come from the profile)."""
        return self.env.device.kind == "cuda"

    @property
    def device(self) -> torch.device:
        return device()

    @property
    def sol(self) -> SpeedOfLight:
        return self.env.speed_of_light

    @property
    def flash(self) -> str:
        """The FlashAttention path that runs here with the profile's dtype (``fa2``, ``sdpa-flash`` or ``sdpa``)."""
        return flash_path(variants.dtype_of(self.sizes["dtype"]))[0]

    @property
    def flash_note(self) -> str:
        """A sentence saying what ``flash`` is on this machine."""
        return flash_path(variants.dtype_of(self.sizes["dtype"]))[1]

    @property
    def protocol(self) -> Protocol:
        """The measuring protocol for this chapter's sweeps, from the profile (see ``measure.protocol``)."""
        return Protocol(**self.profile.protocol)

    @property
    def memory_column(self) -> str:
        """The memory column to compare: the allocator's peak on a GPU; on a CPU (no such counter) the weights."""
        return "peak_alloc_gib" if self.gpu else "weights_gib"

    def report_table(self, *extra: str) -> pd.DataFrame:
        """The lines of the environment report a chapter shows at its top (plus ``extra`` ones)."""
        return self.env.to_frame().loc[
            [r for r in REPORT_ROWS + list(extra) if r in self.env.to_frame().index]
        ]


# kept in a notebook's namespace by chapter(): which names its first set-up read, and the values it filled in
READ_KEY = "__chapter_parameters__"


def chapter(
    number: str,
    parameters: MutableMapping | None = None,
    *,
    profile: str | None = None,
    measure_peaks: bool | None = None,
    **overrides,
) -> Chapter:
    """Set up chapter ``number`` ("00" to "07"): probe the machine, pick the profile and the chapter's sizes.

    A notebook passes its namespace, ``environment.chapter("05", globals())``, and names each parameter once, in
    its parameters cell: ``PROFILE`` picks the profile ("cpu", "small-gpu", "large-gpu"; ``None``: from the
    hardware), and each name that is one of the chapter's sizes in capitals (``MODEL`` for ``model``) replaces the
    profile's value. Each size's ``None`` is filled in, in that namespace, with the value this run uses (``MODEL``
    then holds the model measured). Every value is checked at the door.

    Running the set-up cell again reads the same names as the first time (kept under ``__chapter_parameters__``):
    what later cells stored under a size's name (``HALF = ch.half``) is not read, and a value this function filled
    in is filled in again (from the profile now chosen); a name added to the cell later is read after a restart.
    A first set-up refuses a capitalised near-miss of an unset parameter's name (``MODLE``): it would be ignored.

    Code and tests may give the same by keyword instead (``model="llama-2-7b"``, ``profile=``, ``measure_peaks=``);
    a name given both ways is refused, an unknown keyword too.
    """
    if parameters is not None and not isinstance(parameters, MutableMapping):
        raise WorkbookError(
            f"chapter({number!r}, {type(parameters).__name__}): the second argument is the notebook's namespace.",
            f"Use environment.chapter({number!r}, globals()), or name the parameters by keyword.",
        )
    given = dict(parameters or {})
    record = given.get(READ_KEY) or {}
    # a value filled in last time, unchanged since: the profile's again
    given.update({n: None for n, v in record.get("filled", {}).items() if n in given and given[n] is v})
    if given.get("PROFILE") is not None and profile is not None and given["PROFILE"] != profile:
        raise WorkbookError(
            f"chapter({number!r}): PROFILE = {given['PROFILE']!r} in the namespace and profile={profile!r}.",
            "Set the profile once: in the parameters cell, or as a keyword.",
        )
    prof = profiles.pick(profile or given.get("PROFILE"))
    if number not in prof.chapters:
        raise WorkbookError(f"Unknown chapter {number!r}.", f"Use one of {sorted(prof.chapters)}.")
    sizes = {**{k: getattr(prof, k) for k in SHARED}, **prof.chapters[number]}
    if measure_peaks is not None:
        overrides["measure_peaks"] = measure_peaks
    unknown = sorted(set(overrides) - set(sizes))
    if unknown:
        raise WorkbookError(
            f"Chapter {number} has no parameter {unknown}.", f"Use names from {sorted(sizes)}."
        )
    read = record.get("read")
    if read is None:  # a first set-up: a capitalised name close to an unset parameter's is a misspelling
        names = [k.upper() for k in sizes] + ["PROFILE"]
        near = {
            n: m[0]
            for n in sorted(given)
            if n.isidentifier() and n.isupper() and n not in names
            for m in [difflib.get_close_matches(n, names, n=1, cutoff=0.7)]
            if m and given.get(m[0]) is None
        }
        if near:
            raise WorkbookError(
                f"{', '.join(f'{n} = {given[n]!r:.60}' for n in near)} (chapter {number}): not a parameter; "
                f"the chapter reads {', '.join(near.values())}.",
                f"Rename {', '.join(f'{n} to {m}' for n, m in near.items())}, then `del {', '.join(near)}` (or "
                "restart the kernel); as spelt, it is ignored and the profile's value used.",
            )
    from_cell = {
        k: given[k.upper()] for k in sizes if k.upper() in given and (read is None or k.upper() in read)
    }
    twice = sorted(k for k, v in overrides.items() if v is not None and from_cell.get(k) is not None)
    if twice:
        raise WorkbookError(
            f"Chapter {number}: {[k.upper() for k in twice]} set in the namespace and {twice} by keyword.",
            "Set each parameter once: in the parameters cell, or as a keyword.",
        )
    for k, v in {**from_cell, **overrides}.items():
        if v is not None:
            sizes[k] = check_parameter(number, k, v, sizes[k], spelled=k.upper() if k in from_cell else None)
    if parameters is not None:
        parameters.update({k.upper(): sizes[k] for k in from_cell})
        parameters[READ_KEY] = {
            "read": tuple(sorted(k.upper() for k in from_cell)) if read is None else read,
            "filled": {k.upper(): sizes[k] for k, v in from_cell.items() if v is None},
        }
    return Chapter(number, report(measure=sizes["measure_peaks"]), prof, sizes)


DTYPE_KEYS = {"dtype", "half", "encoder_dtype", "quality_dtype", "layer_dtype", "trained_dtype", "opt_dtype"}
MODEL_KEYS = {"model", "models", "decoder", "decoders", "small_decoder", "opt", "colab_models"}


def check_parameter(number: str, key: str, value, default, spelled: str | None = None):
    """A notebook parameter checked against the kind of the profile's value it replaces, at the door: a model name
    is a catalog name, a dtype a dtype name, a list stays a list of the same kind, a count a positive whole number,
    a fraction a number between 0 and 1. Returns the value as the chapter keeps it (whole numbers as ``int``)."""
    # as the reader sets it: in the parameters cell, or a keyword
    set_ = f"{spelled} = " if spelled else f"{key}="
    where = (
        f"{spelled} = {value!r} (chapter {number})" if spelled else f"chapter({number!r}, {key}={value!r})"
    )
    if isinstance(default, list) and not isinstance(value, (list, tuple)):
        raise WorkbookError(
            f"{where}: {key} is a list.", f"Use {set_}[{value!r}] (the profile has {set_}{default!r})."
        )
    if key in MODEL_KEYS:
        for name in value if isinstance(default, list) else [value]:
            if not isinstance(name, str):
                raise WorkbookError(
                    f"{where}: {name!r} is not a model name.", f"Use catalog names, e.g. {set_}{default!r}."
                )
            try:
                catalog.entry(name)  # an unknown name is refused with the close ones
            except WorkbookError as e:
                raise WorkbookError(f"{where}: {e.problem}", e.fix) from None
        return list(value) if isinstance(default, list) else value
    if key in DTYPE_KEYS:
        if not isinstance(value, str) or value not in variants.DTYPES:
            raise WorkbookError(
                f"{where}: not a dtype name.",
                f"Use e.g. {set_}{default!r} (one of {sorted(variants.DTYPES)}).",
            )
        return value
    if key == "quality_windows":  # a count of windows, or "all" of the corpus
        if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise WorkbookError(
                f"{where}: a number of windows or 'all'.", f"Use e.g. {set_}2 or {set_}'all'."
            )
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise WorkbookError(f"{where}: {key} is True or False.", f"Use {set_}{default}.")
        return value
    if isinstance(default, list) and default and all(isinstance(x, numbers.Real) for x in default):
        checked = []
        for x in value:
            try:
                checked.append(check_parameter(number, key, x, default[0]))
            except WorkbookError as e:
                raise WorkbookError(
                    f"{where}: the entry {x!r}: {e.problem.split(': ', 1)[-1]}",
                    f"Use a list like the profile's: {set_}{default!r}.",
                ) from None
        return checked
    if isinstance(default, numbers.Real):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise WorkbookError(
                f"{where}: {key} is a number.", f"Use a number like the profile's {default!r}."
            )
        if "fraction" in key or "share" in key:
            if not 0 <= value < 1 or (key.startswith("budget") and value == 0):
                raise WorkbookError(f"{where}: a share is between 0 and 1.", f"Use e.g. {set_}{default!r}.")
            return float(value)
        if isinstance(default, numbers.Integral):
            if value != int(value) or value < min(default, 1):
                raise WorkbookError(
                    f"{where}: {key} is a {'' if default < 1 else 'positive '}whole number.",
                    f"Use e.g. {set_}{max(default, 1)!r}.",
                )
            return int(value)
        if value <= 0:
            raise WorkbookError(f"{where}: {key} is a positive number.", f"Use e.g. {set_}{default!r}.")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise WorkbookError(f"{where}: {key} is a name.", f"Use e.g. {set_}{default!r}.")
    return value
