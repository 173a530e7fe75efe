"""Reading and writing maps and structures: one import for both.

The code lives in :mod:`difffit.maps` (DensityMap, MRC/CCP4) and
:mod:`difffit.structures` (Structure, PDB/mmCIF); this module gathers their public names.
"""
from .maps import DensityMap, read_map, write_map
from .structures import SELECTIONS, Structure, read_structure, split_chains, write_structure

__all__ = ["DensityMap", "read_map", "write_map", "Structure", "SELECTIONS", "read_structure",
           "split_chains", "write_structure"]
