"""pytest plugin: items marked ``kernel`` run in the kernel test host, one batch per session.

On the host, the plugin never runs a ``kernel`` item (no fixtures, no body). At the first such
item it runs *all* selected ``kernel`` items as one batch (one boot, or a few boots side by
side for a long batch, see vm.py), then replays each item's guest reports (setup/call/teardown,
serialised with pytest's own report hooks) as that item's host result. A test that fails in
the guest therefore fails on the host with the guest's traceback and captured output. If the
batch fails as a whole (cache build error, guest hang, crash), every item without a report
fails with the reason and the console log's tail. If QEMU cannot run at all, the items are
skipped with the reason, which is also printed in the summary.

In the guest (``LXCRI_IN_KERNEL_HOST=1``) the same plugin only records reports.

Activation: ``-p tests.kernelhost.plugin`` or, for tests under tests/kernel, that directory's
conftest.py. Marker options: ``@pytest.mark.kernel(modules=("nbd",))`` loads extra modules in
the guest on top of config.GUEST_MODULES.

Flavours (config.FLAVOURS): ``kernel`` runs in Debian 12 (the host's userland over 9p, bash as
PID 1), ``pve9`` in Debian 13 (its own root filesystem, systemd as PID 1, LXC 6, OpenZFS 2.3).
Each has its own dispatcher and batch. ``@pytest.mark.pve9`` adds a test to the pve9 batch *when
the session's -m expression needs that marker* (``-m pve9``): the same test can then be a host
test (tests/integration) or a ``kernel`` test in other sessions. ``@pytest.mark.pve9(only=True)``
marks a test that exists only for the pve9 guest: it is deselected by sessions whose -m
expression excludes it, and dispatched to the pve9 batch otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
from _pytest.mark.expression import Expression
from _pytest.reports import TestReport

from tests.kernelhost import config
from tests.kernelhost.guest import IN_GUEST_ENV, RESULTS_ENV

if TYPE_CHECKING:
    from tests.kernelhost.vm import BatchResult

PLUGIN_NAME = "lxcri-kernelhost"
# Passed to the guest's pytest: verbose output and per-test durations in the console log, short
# tracebacks in the reports replayed on the host.
GUEST_PYTEST_ARGS = ("-v", "-rfEs", "--tb=short", "--color=no", "--durations=0",
                     "--durations-min=0.5")


def in_guest() -> bool:
    return os.environ.get(IN_GUEST_ENV) == "1"


def install(config_: pytest.Config) -> None:
    """Register the host or guest half once (``-p`` and conftest.py may both ask)."""
    pm = config_.pluginmanager
    if pm.has_plugin(PLUGIN_NAME):
        return
    if in_guest():
        pm.register(GuestRecorder(config_, Path(os.environ[RESULTS_ENV])), PLUGIN_NAME)
        return
    # pve9 first: the kernel dispatcher leaves it the items it claims.
    pve9 = HostDispatcher(config_, config.TRIXIE)
    pm.register(HostDispatcher(config_, config.BOOKWORM, defer_to=pve9), PLUGIN_NAME)
    pm.register(pve9, f"{PLUGIN_NAME}-{config.TRIXIE.marker}")


def expression_needs(markexpr: str, marker: str) -> bool:
    """True when ``-m markexpr`` selects items carrying ``marker`` and never items without it.

    ``-m pve9`` and ``-m "pve9 and not kernel"`` need it; ``-m "not kernel"``, ``-m kernel`` and
    no ``-m`` do not.
    """
    if not markexpr.strip():
        return False
    expr = Expression.compile(markexpr)
    return (not expr.evaluate(lambda name, **kw: False)
            and expr.evaluate(lambda name, **kw: name == marker))


def only_for(item: pytest.Item, marker: str) -> bool:
    """The item exists only for that flavour's guest (``@pytest.mark.pve9(only=True)``)."""
    mark = item.get_closest_marker(marker)
    return mark is not None and bool(mark.kwargs.get("only"))


def pytest_configure(config: pytest.Config) -> None:
    install(config)


class GuestRecorder:
    """Appends every test and failed collection report to results.jsonl (9p, read by the host)."""

    def __init__(self, config_: pytest.Config, path: Path) -> None:
        self.config = config_
        self.path = path

    def _write(self, rec: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            # On disk before the next test: a later hang ends in a SIGKILL of QEMU.
            os.fsync(f.fileno())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self._write({"kind": "test", "nodeid": report.nodeid, "report": data})

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            data = self.config.hook.pytest_report_to_serializable(config=self.config,
                                                                  report=report)
            self._write({"kind": "collect", "nodeid": report.nodeid, "report": data})


class HostDispatcher:
    """One flavour's batch: which items it takes, the boot, the replay of the guest's reports."""

    def __init__(self, config_: pytest.Config, flavour: config.Flavour = config.BOOKWORM,
                 defer_to: HostDispatcher | None = None) -> None:
        self.config = config_
        self.flavour = flavour
        self.defer_to = defer_to
        self.items: list[pytest.Item] = []
        self._ids: set[str] = set()
        self.result: BatchResult | None = None
        self.skip_reason: str | None = None
        self.ran = False

    def _needed(self) -> bool:
        return expression_needs(str(self.config.option.markexpr or ""), self.flavour.marker)

    def claims(self, item: pytest.Item) -> bool:
        """Whether this flavour's batch runs the item (see the module docstring)."""
        if item.get_closest_marker(self.flavour.marker) is None:
            return False
        if self.flavour.marker == "kernel":
            return self.defer_to is None or not self.defer_to.claims(item)
        return self._needed() or (only_for(item, self.flavour.marker)
                                  and not str(self.config.option.markexpr or "").strip())

    def is_kernel(self, item: pytest.Item) -> bool:
        return item.nodeid in self._ids

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        # Tests that exist only for this flavour's guest leave sessions that do not run it
        # (the host suite's -m "not kernel", the kernel batch's -m kernel).
        if self.flavour.marker == "kernel":
            return
        gone = [i for i in items if only_for(i, self.flavour.marker) and not self.claims(i)]
        if gone:
            config.hook.pytest_deselected(items=gone)
            items[:] = [i for i in items if i not in gone]

    def _say(self, msg: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(msg)
        else:
            print(msg, flush=True)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = [i for i in session.items if self.claims(i)]
        self._ids = {i.nodeid for i in self.items}

    def _modules(self) -> list[str]:
        mods = list(config.GUEST_MODULES)
        for item in self.items:
            for mark in (*item.iter_markers("kernel"), *item.iter_markers(self.flavour.marker)):
                for m in mark.kwargs.get("modules", ()):
                    if m not in mods:
                        mods.append(m)
        return mods

    def _run_batch(self) -> None:
        self.ran = True
        # Imported here: collection alone (and the guest) never needs QEMU or the cache code.
        from tests.kernelhost import vm

        reason = vm.qemu_unusable_reason()
        if reason is not None:
            self.skip_reason = f"kernel test host unavailable: {reason}"
            self._say(f"\n{self.skip_reason}")
            return
        self._say(f"\nkernel test host ({self.flavour.marker}): {len(self.items)} test(s) in "
                  f"{self.flavour.title} under QEMU TCG (packages resolved from the archive "
                  f"now)")
        self.result = vm.run_batch([i.nodeid for i in self.items], self.config.rootpath,
                                   modules=self._modules(), pytest_args=GUEST_PYTEST_ARGS,
                                   log=self._say, flavour=self.flavour)

    def _failure_text(self, batch: BatchResult, item: pytest.Item) -> str:
        boot = batch.boot_of(item.nodeid)
        if boot is None:
            return batch.error or "the test was not part of any boot"
        lines = [boot.error or "the guest produced no report for this test"]
        for c in boot.collect_errors:
            lines.append(f"guest collection error in {c.get('nodeid')}:\n{c.get('longrepr')}")
        if boot.console:
            if boot.console_log is not None:
                lines.append(f"full console log: {boot.console_log}")
            lines.append("--- guest console (tail) ---")
            lines.append(boot.console_tail())
        return "\n".join(lines)

    def _synthetic(self, item: pytest.Item, when: Literal["setup", "call", "teardown"],
                   outcome: Literal["passed", "failed", "skipped"],
                   longrepr: Any = None) -> TestReport:
        return TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, outcome,
                          longrepr, when)

    def _guest_reports(self, nodeid: str) -> list[dict[str, Any]]:
        boot = self.result.boot_of(nodeid) if self.result is not None else None
        return boot.reports.get(nodeid, []) if boot is not None else []

    def _reports(self, item: pytest.Item) -> list[TestReport]:
        if self.skip_reason is not None or self.result is None:
            path, lineno, _ = item.location
            reason = self.skip_reason or "kernel test host did not run"
            return [self._synthetic(item, "setup", "skipped",
                                    (str(path), (lineno or 0) + 1, reason)),
                    self._synthetic(item, "teardown", "passed")]
        reps = [self.config.hook.pytest_report_from_serializable(config=self.config, data=d)
                for d in self._guest_reports(item.nodeid)]
        reps = [r for r in reps if isinstance(r, TestReport)]
        if not any(r.when == "teardown" for r in reps):
            # No (complete) guest result: a failure on the host, never silently green.
            if not reps:
                reps.append(self._synthetic(item, "setup", "passed"))
            reps.append(self._synthetic(item, "call", "failed",
                                        self._failure_text(self.result, item)))
            reps.append(self._synthetic(item, "teardown", "passed"))
        return reps

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> bool | None:
        if not self.is_kernel(item):
            return None
        if not self.ran:
            self._run_batch()
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for rep in self._reports(item):
            ihook.pytest_runtest_logreport(report=rep)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _outcome(self, nodeid: str) -> str:
        reps = self._guest_reports(nodeid)
        call = [d for d in reps if d.get("when") == "call"]
        if call:
            return str(call[-1].get("outcome"))
        if reps and all(d.get("outcome") != "failed" for d in reps):
            return str(reps[0].get("outcome"))
        return "failed"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.items or not self.ran:
            return
        tr = terminalreporter
        tr.section("kernel test host" + ("" if self.flavour.marker == "kernel"
                                         else f" ({self.flavour.marker})"))
        if self.skip_reason is not None:
            tr.write_line(f"SKIPPED {len(self.items)} kernel test(s): {self.skip_reason}")
            return
        batch = self.result
        if batch is None:
            return
        counts: dict[str, int] = {}
        for item in self.items:
            outcome = self._outcome(item.nodeid)
            counts[outcome] = counts.get(outcome, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        tr.write_line(f"{len(self.items)} test(s) in {len(batch.boots)} parallel boot(s) "
                      f"(QEMU TCG): {summary or 'none run'}")
        tr.write_line(f"guest: {batch.versions or 'not prepared'}")
        if batch.cache_note:
            tr.write_line(f"NOTE: {batch.cache_note}")
        tr.write_line(f"batch wall time {batch.wall_s:.1f} s (cache check/build "
                      f"{batch.prepare_s:.1f} s, VMs {batch.wall_s - batch.prepare_s:.1f} s)")
        if batch.error:
            tr.write_line(f"batch error: {batch.error}")
        for i, boot in enumerate(batch.boots):
            state = f", error: {boot.error}" if boot.error else ""
            tr.write_line(f"  boot {i}: {len(boot.nodeids)} test(s), {boot.vm_s:.1f} s, "
                          f"console {boot.console_log}{state}")
