"""Stage 7 — report: plots, and the self-contained HTML report (:func:`onnx_fe.report`).

Modules: ``runs`` (read results), ``summary`` (the numbers shown; pure), ``figures`` (matplotlib → inline SVG/PNG;
pure), ``gallery`` (recomputed unit maps and their birth sets), ``html`` (page assembly; pure), ``build`` (the API),
``plots`` (the PNG figures of ``ablate`` and ``compare``).

``onnx_fe.report`` is this package and the API function at once: the package is callable, and calling it runs
:func:`onnx_fe.report.build.report` (``onnx_fe.report("out/")`` writes ``out/report.html``). One name cannot hold a
package and a function, and a callable package keeps ``onnx_fe.report.plots`` and the call working in any import
order.
"""

import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        """Write the HTML report: see :func:`onnx_fe.report.build.report`."""
        from .build import report

        return report(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
