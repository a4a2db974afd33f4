"""Drop-in replacements for the reference NeuMeta API: switch a project by changing its imports.

    from neumeta_fast.compat import (NeRF_ResMLP_Compose, sample_coordinates, create_key_masks,
                                     sample_weights, sample_merge_model, weighted_regression_loss,
                                     PermutationManager)

Same names, arguments, defaults and return types as the authors' code; weights come from
`neumeta_fast.generate` (any backend). The differences from the reference are listed in the README
("Coming from the reference code"); `neumeta_fast.upstream` loads the authors' checkpoint files.
"""
from .coordinates import create_key_masks, sample_coordinates, sample_subset
from .hypermodel import NeRF_MLP_Compose, NeRF_ResMLP_Compose
from .losses import weighted_regression_loss
from .permute import PermutationManager
from .sampling import sample_merge_model, sample_single_model, sample_weights

__all__ = [
    "NeRF_MLP_Compose", "NeRF_ResMLP_Compose", "PermutationManager", "create_key_masks", "sample_coordinates",
    "sample_merge_model", "sample_single_model", "sample_subset", "sample_weights", "weighted_regression_loss",
]
