"""The adaptation's background process as the Slicer panel runs it: ``PythonSlicer -m LDCTDenoiseLib.adaptation.job``
in a ``QProcess``, read through Qt's signals so Slicer's event loop delivers its events, as
lassoan/SlicerMONAIAuto3DSeg keeps its process handling in MONAIAuto3DSegLib/process.py.

PythonQt hands a ``QByteArray`` to Python as a wrapped object that ``bytes()`` refuses; ``.data()`` gives the bytes
in PythonQt and PySide6 alike.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import qt
from slicer.i18n import tr as _


class AdaptationProcess:
    """One adaptation running in a PythonSlicer process (LDCTDenoiseLib.adaptation.job): hands its events to the
    panel as they come, asks it to stop, and removes its job folder when done.

    A process rather than a thread: the training would hold Python's lock and freeze Slicer, and a process can be
    stopped at any moment without leaving anything half-written.
    """

    STOP_WAIT_MS = 20000  # after a cancel request, kill the process if it has not stopped by then
    STDERR_KEPT_CHARS = 4000

    def __init__(self, jobDir: Path, onEvent: Callable[[dict], None],
                 onFinished: Callable[["AdaptationProcess"], None]) -> None:
        from LDCTDenoiseLib.adaptation.job import EventReader

        self.jobDir = jobDir
        self.onEvent, self.onFinished = onEvent, onFinished
        self.reader = EventReader()
        self.lastEvent: dict = {}
        self.stderr = ""
        self.cancelRequested = False
        self.process = qt.QProcess()
        self.process.readyReadStandardOutput.connect(self._readOutput)
        self.process.readyReadStandardError.connect(self._readError)
        self.process.finished.connect(self._finished)
        self._connected = True

    def start(self, executable: str, modulePath: str) -> None:
        """Run ``executable -m LDCTDenoiseLib.adaptation.job JOB_DIR`` with the module's folder on PYTHONPATH."""
        environment = qt.QProcessEnvironment.systemEnvironment()
        pythonPath = environment.value("PYTHONPATH")
        environment.insert("PYTHONPATH", modulePath + (os.pathsep + pythonPath if pythonPath else ""))
        self.process.setProcessEnvironment(environment)
        self.process.setProgram(executable)
        self.process.setArguments(["-m", "LDCTDenoiseLib.adaptation.job", str(self.jobDir)])
        self.process.start()
        if not self.process.waitForStarted(10000):
            raise RuntimeError(_("Could not start {executable}: {error}").format(
                executable=executable, error=self.process.errorString()))

    def isRunning(self) -> bool:
        return self.process.state() != qt.QProcess.NotRunning

    def cancel(self) -> None:
        """Ask the job to stop before its next step; kill it if it has not stopped after STOP_WAIT_MS."""
        from LDCTDenoiseLib.adaptation.job import request_cancel

        self.cancelRequested = True
        request_cancel(self.jobDir)
        qt.QTimer.singleShot(self.STOP_WAIT_MS, self._killIfRunning)

    def stop(self) -> None:
        """Stop now (Slicer is closing): ask, wait a little, then kill."""
        self.cancel()
        if not self.process.waitForFinished(3000):
            self._killIfRunning()

    def _killIfRunning(self) -> None:
        if self.isRunning():
            self.process.kill()

    def _readOutput(self) -> None:
        text = self.process.readAllStandardOutput().data().decode("utf-8", errors="replace")
        for event in self.reader.feed(text):
            self.lastEvent = event
            self.onEvent(event)

    def _readError(self) -> None:
        text = self.process.readAllStandardError().data().decode("utf-8", errors="replace")
        self.stderr = (self.stderr + text)[-self.STDERR_KEPT_CHARS:]

    def _finished(self, *args) -> None:
        self._readOutput()
        self._readError()
        if self.stderr.strip():
            logging.info(f"LDCTDenoise adaptation process output:\n{self.stderr}")
        self.onFinished(self)

    def errorMessage(self) -> str:
        """What went wrong, in the job's words when it could say, else the end of its error output."""
        if self.lastEvent.get("event") == "error":
            return self.lastEvent["message"]
        tail = self.stderr.strip().splitlines()[-5:]
        return "\n".join(tail) or _("The process ended with exit code {code}.").format(code=self.process.exitCode())

    def cleanup(self) -> None:
        """Remove the job folder and let the ended process go: PythonQt's signal receiver holds the connected
        methods, and with them this object and its QProcess, until they are disconnected."""
        shutil.rmtree(self.jobDir, ignore_errors=True)
        if self._connected and not self.isRunning():
            self.process.readyReadStandardOutput.disconnect(self._readOutput)
            self.process.readyReadStandardError.disconnect(self._readError)
            self.process.finished.disconnect(self._finished)
            self._connected = False
