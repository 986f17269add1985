"""L0 foundation zoo: backbones by modality, registered in :data:`BACKBONES`.

Builders are imported explicitly here (no star imports) so importing ``modelfab.zoo`` fills the
catalog.  Heavy optional dependencies are imported inside the builders: a missing extra raises
:class:`~modelfab.core.errors.MissingExtraError` with a one-line install hint at build time.
"""

from modelfab.zoo.base import (
    Backbone,
    BackboneCard,
    InputSpec,
    Source,
    TextBackbone,
    VisionBackbone,
    embed_items,
    evaluating,
    num_parameters,
)
from modelfab.zoo.catalog import BACKBONES, build_backbone, make_config
from modelfab.zoo.lm.pretrained import build_pretrained_lm
from modelfab.zoo.lm.smollm2 import build_smollm2
from modelfab.zoo.local import build_local
from modelfab.zoo.storage import SavedBackbone, load_backbone, save_backbone
from modelfab.zoo.text.e5 import build_e5
from modelfab.zoo.text.minilm import build_minilm
from modelfab.zoo.vision.lite_backbone import build_efficientnet_lite0, build_efficientnet_lite2

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneCard",
    "InputSpec",
    "SavedBackbone",
    "Source",
    "TextBackbone",
    "VisionBackbone",
    "build_backbone",
    "build_e5",
    "build_efficientnet_lite0",
    "build_efficientnet_lite2",
    "build_local",
    "build_minilm",
    "build_pretrained_lm",
    "build_smollm2",
    "embed_items",
    "evaluating",
    "load_backbone",
    "make_config",
    "num_parameters",
    "save_backbone",
]
