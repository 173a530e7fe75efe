"""Writers of results: every file difffit writes for a fit, a composite run and an
identify run, each in its own module, sharing :mod:`.common` and
:mod:`difffit.tables`."""
from .composite import write_composite_outputs
from .fit import model_filenames, write_fit_outputs
from .identify import write_identify_outputs

__all__ = ["write_fit_outputs", "write_composite_outputs", "write_identify_outputs",
           "model_filenames"]
